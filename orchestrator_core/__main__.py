"""`python -m orchestrator_core`."""

from orchestrator_core.cli import main

raise SystemExit(main())
