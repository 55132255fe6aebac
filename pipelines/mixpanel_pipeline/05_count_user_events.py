"""Step 5 of mixpanel_pipeline: count events, active days, revenue and products (logic in database.steps; see README.md)."""

from functools import partial
from pathlib import Path

from database.steps import count_user_events, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    names = Path(__file__).resolve().with_name("event_names.yaml")
    return run_step("count_user_events", partial(count_user_events, default_event_names=names))


if __name__ == "__main__":
    raise SystemExit(main())
