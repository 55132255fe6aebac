"""The one place that knows where things live in and around the pipelines folder."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

ENV_PIPELINES_DIR = "ORCHESTRATOR_PIPELINES_DIR"
RUNS_FOLDER = ".runs"


def project_root() -> Path:
    """The folder that holds this package (the repository root in an editable install)."""
    return Path(__file__).resolve().parent.parent


def resolve_pipelines_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The pipelines folder: the explicit argument, else $ORCHESTRATOR_PIPELINES_DIR, else ./pipelines
    of the project root. Read at call time so tests and pages can point elsewhere."""
    chosen = explicit or os.environ.get(ENV_PIPELINES_DIR) or project_root() / "pipelines"
    return Path(chosen).expanduser().resolve()


def workdir(pipelines_dir: Path) -> Path:
    """Where steps run: the folder that holds the pipelines folder."""
    return pipelines_dir.parent


def status_path(pipelines_dir: Path, pipeline_id: str) -> Path:
    """`<pipelines_dir>/.<id>.status.json`, the seed's status file."""
    return pipelines_dir / f".{pipeline_id}.status.json"


def status_lock_path(pipelines_dir: Path, pipeline_id: str) -> Path:
    """The lock file that serialises writers of one status file."""
    return pipelines_dir / f".{pipeline_id}.status.lock"


def run_lock_path(pipelines_dir: Path, pipeline_id: str) -> Path:
    """The lock file held for as long as a run of the pipeline is in progress."""
    return pipelines_dir / f".{pipeline_id}.lock"


def runs_dir(pipelines_dir: Path, pipeline_id: str | None = None) -> Path:
    """The run history folder, for all pipelines or for one."""
    base = pipelines_dir / RUNS_FOLDER
    return base / pipeline_id if pipeline_id else base


def log_relpath(pipeline_id: str, run_id: str, step: str) -> str:
    """A step's log of a run, relative to the pipelines folder (as run records keep it)."""
    return f"{RUNS_FOLDER}/{pipeline_id}/{run_id}/{safe_filename(step)}.log"


def safe_filename(name: str) -> str:
    """A step name made safe to use as a file name; a name that had to change gets a short
    hash of the original, so `a b` and `a_b` never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "step"
    if safe == name:
        return safe
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
