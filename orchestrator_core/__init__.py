"""File-first pipeline orchestrator core."""
