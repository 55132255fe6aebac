"""Step 1 of mixpanel_pipeline: fetch missing and recent days into the cache (logic in database.steps; see README.md)."""

from database.steps import download_update_data, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    return run_step("download_update_data", download_update_data)


if __name__ == "__main__":
    raise SystemExit(main())
