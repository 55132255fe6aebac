"""Step 2 of mixpanel_pipeline: migrate the database and load the cached days (logic in database.steps; see README.md)."""

from database.steps import ingest_data, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    return run_step("ingest_data", ingest_data)


if __name__ == "__main__":
    raise SystemExit(main())
