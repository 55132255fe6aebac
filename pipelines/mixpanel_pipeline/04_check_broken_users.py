"""Step 4 of mixpanel_pipeline: mark invalid users and the reasons (logic in database.steps; see README.md)."""

from database.steps import check_broken_users, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    return run_step("check_broken_users", check_broken_users)


if __name__ == "__main__":
    raise SystemExit(main())
