"""The one exception family of the orchestrator: every user-facing error carries a usable message."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error a user can act on; `str(err)` is the one line to show them."""


class PipelineNotFoundError(OrchestratorError):
    """A pipeline id that discovery did not find."""


class PipelineInvalidError(OrchestratorError):
    """A pipeline whose files have validation problems, so it cannot run."""


class SelectionError(OrchestratorError):
    """A step selection that names a missing step or is otherwise unusable."""


class PipelineBusyError(OrchestratorError):
    """The pipeline is already running (in this process or another one)."""


class RunNotFoundError(OrchestratorError):
    """A run id with no record on disk."""
