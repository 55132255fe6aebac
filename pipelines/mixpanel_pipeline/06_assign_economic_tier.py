"""Step 6 of mixpanel_pipeline: assign economic tiers from tiers.yaml (logic in database.steps)."""

from functools import partial
from pathlib import Path

from database.steps import assign_economic_tier, run_step


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    tiers = Path(__file__).resolve().with_name("tiers.yaml")
    return run_step("assign_economic_tier", partial(assign_economic_tier, default_tiers=tiers))


if __name__ == "__main__":
    raise SystemExit(main())
