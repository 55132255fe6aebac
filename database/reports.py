"""Step reports: figures and checks, written atomically to reports/mixpanel_pipeline/<step>.json."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from database.pipeline_state import now_iso


@dataclass
class Check:
    """One verification a step made: its name, whether it held, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class StepReport:
    """Collects a step's figures and checks; `write` saves them as JSON."""

    step: str
    started_at: str = field(default_factory=now_iso)
    figures: dict[str, object] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a check; return whether it held."""
        self.checks.append(Check(name, bool(ok), "" if ok else detail))
        return bool(ok)

    @property
    def failed_checks(self) -> list[Check]:
        """The checks that did not hold."""
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        """True when there is no error and every check held."""
        return self.error is None and not self.failed_checks

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        return {
            "step": self.step,
            "status": "ok" if self.ok else "failed",
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "pipeline_run_id": os.environ.get("PIPELINE_RUN_ID"),
            "error": self.error,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "figures": self.figures,
        }

    def write(self, reports_dir: Path) -> Path:
        """Write `<reports_dir>/<step>.json` via a temp file and `os.replace`."""
        reports_dir = Path(reports_dir)
        reports_dir.mkdir(parents=True, exist_ok=True)
        path = reports_dir / f"{self.step}.json"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        data = orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        with open(tmp, "wb") as handle:
            handle.write(data + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path


def read_report(reports_dir: Path, step: str) -> dict | None:
    """The last report of `step`, or None when it has not run."""
    path = Path(reports_dir) / f"{step}.json"
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
