"""Step 3 of mixpanel_pipeline: flag users with ABI attribution (logic in database.steps; see README.md)."""

from database.steps import run_step, set_abi_attribution


def main() -> int:
    """Run the step with settings from the environment; return the exit code."""
    return run_step("set_abi_attribution", set_abi_attribution)


if __name__ == "__main__":
    raise SystemExit(main())
