"""Step 5 of mixpanel_pipeline: count events, active days, revenue and products (logic in database.steps; see README.md)."""

from database.steps import count_user_events, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    return run_step("count_user_events", count_user_events)


if __name__ == "__main__":
    raise SystemExit(main())
