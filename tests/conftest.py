"""Shared fixtures for the core's tests: real pipeline folders in tmp dirs, a real engine,
and the real CLI run as a subprocess. Nothing here is autouse."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from orchestrator_core.engine import Engine

# Every generated step script starts with these imports, so test snippets stay short.
SCRIPT_PRELUDE = "import json, os, pathlib, subprocess, sys, time\n"

# Settings from the outer environment that would change what the CLI does.
_ORCHESTRATOR_ENV = ("ORCHESTRATOR_PIPELINES_DIR", "ORCHESTRATOR_KEEP_RUNS")


def _wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {cond}")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """`wait_until(cond, timeout=10)`: poll until `cond()` is truthy and return its value."""
    return _wait_until


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def pid_gone() -> Callable[[int], bool]:
    """True when a process no longer runs (gone, or a zombie nobody has reaped yet)."""
    return _pid_gone


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    """An empty `pipelines` folder; its parent is where steps run."""
    d = (tmp_path / "pipelines").resolve()
    d.mkdir()
    return d


@pytest.fixture
def make_pipeline(pipelines_dir: Path) -> Callable[..., Path]:
    """Write a pipeline YAML and its step scripts; returns the YAML's path.

    `steps` is a list of step mappings; each may carry `code` (the script's body, after
    SCRIPT_PRELUDE) which is not written to the YAML. `name`, `script` and `description`
    get defaults. `layout="file"` writes `<id>.yaml` + `<id>/`, `"folder"` `<id>/pipeline.yaml`.
    """

    def make(
        pipeline_id: str,
        steps: list[dict[str, Any]],
        *,
        layout: str = "file",
        suffix: str = ".yaml",
        **top: Any,
    ) -> Path:
        if layout == "file":
            yaml_path = pipelines_dir / f"{pipeline_id}{suffix}"
            scripts_dir = pipelines_dir / pipeline_id
        else:
            scripts_dir = pipelines_dir / pipeline_id
            yaml_path = scripts_dir / f"pipeline{suffix}"
        scripts_dir.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "name": top.pop("name", f"Pipeline {pipeline_id}"),
            "description": top.pop("description", f"test pipeline {pipeline_id}"),
            **top,
            "steps": [],
        }
        for raw in steps:
            step = dict(raw)
            code = step.pop("code", "print('step', os.environ['PIPELINE_STEP'], 'done')")
            step.setdefault("script", f"{step['name']}.py")
            step.setdefault("description", f"step {step['name']}")
            (scripts_dir / step["script"]).write_text(SCRIPT_PRELUDE + textwrap.dedent(code))
            doc["steps"].append(step)
        yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return yaml_path

    return make


@pytest.fixture
def write_yaml(pipelines_dir: Path) -> Callable[..., Path]:
    """Write raw YAML text as `<id>.yaml` (scripts folder created); returns its path."""

    def write(pipeline_id: str, text: str, *, scripts: tuple[str, ...] = ()) -> Path:
        path = pipelines_dir / f"{pipeline_id}.yaml"
        path.write_text(textwrap.dedent(text))
        (pipelines_dir / pipeline_id).mkdir(exist_ok=True)
        for name in scripts:
            (pipelines_dir / pipeline_id / name).write_text("print('ok')\n")
        return path

    return write


@pytest.fixture
def make_engine(pipelines_dir: Path) -> Iterator[Callable[..., Engine]]:
    """Build engines over `pipelines_dir` (short kill grace); all are shut down at teardown."""
    engines: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        kwargs.setdefault("kill_grace", 0.5)
        engine = Engine(pipelines_dir, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    """An engine over `pipelines_dir`, shut down at teardown."""
    return make_engine()


@pytest.fixture
def run_to_end(engine: Engine) -> Callable[..., dict[str, Any]]:
    """Submit a run on `engine`, wait for its end and return the final run record."""

    def run(pipeline_id: str, selection: Any = None, **kwargs: Any) -> dict[str, Any]:
        run_id = engine.submit(pipeline_id, selection, **kwargs)
        record = engine.wait(run_id, timeout=60)
        assert record is not None, f"run {run_id} did not end within 60 s"
        return record

    return run


@pytest.fixture
def read_status(pipelines_dir: Path) -> Callable[[str], dict[str, Any]]:
    """The raw JSON of `.<id>.status.json`, read the way a person with `cat` would."""

    def read(pipeline_id: str) -> dict[str, Any]:
        path = pipelines_dir / f".{pipeline_id}.status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    return read


def _cli_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ORCHESTRATOR_ENV}
    env.update(extra or {})
    return env


@pytest.fixture
def cli(pipelines_dir: Path) -> Callable[..., tuple[int, str, str]]:
    """Run `python -m orchestrator_core --pipelines-dir DIR ARGS...` as a real subprocess
    (cwd: the folder above `pipelines`); returns (exit code, stdout, stderr).
    `pipelines_dir=None` leaves the option out. `unprivileged=True` runs it as a user whom
    file permissions bind: root gives up its capabilities (`setpriv`), so such tests hold
    as root too."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        pipelines_dir_arg: Path | None = pipelines_dir,
        timeout: float = 60,
        unprivileged: bool = False,
    ) -> tuple[int, str, str]:
        opts = ["--pipelines-dir", str(pipelines_dir_arg)] if pipelines_dir_arg else []
        drop = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"]
        prefix = drop if unprivileged and os.getuid() == 0 else []
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "orchestrator_core", *opts, *args],
            cwd=pipelines_dir.parent,
            env=_cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


@pytest.fixture
def cli_start(pipelines_dir: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the CLI in the background (stdout/stderr piped); killed at teardown if still up."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator_core",
                "--pipelines-dir",
                str(pipelines_dir),
                *args,
            ],
            cwd=pipelines_dir.parent,
            env=_cli_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture
def leftover_pids() -> Iterator[list[int]]:
    """Pids a test saw its steps start; any still alive at teardown are SIGKILLed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not _pid_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# A step that starts a child that starts a grandchild; each notes its pid in a file of the
# folder given as its first argument, then sleeps. Killing "the whole tree" must end all three.
_NOTE = "(d / (n + '.tmp')).write_text(str(os.getpid())); os.replace(d / (n + '.tmp'), d / n)"
_GRANDCHILD = f"import os, pathlib, sys, time; d = pathlib.Path(sys.argv[1]); n = 'grandchild'; {_NOTE}; time.sleep(60)"
_CHILD = (
    "import os, pathlib, subprocess, sys, time; d = pathlib.Path(sys.argv[1]); "
    "subprocess.Popen([sys.executable, '-c', os.environ['TREE_GRANDCHILD'], sys.argv[1]]); "
    f"n = 'child'; {_NOTE}; time.sleep(60)"
)
TREE_STEP_CODE = f"""\
d = pathlib.Path(sys.argv[1])
os.environ["TREE_GRANDCHILD"] = {_GRANDCHILD!r}
subprocess.Popen([sys.executable, "-c", {_CHILD!r}, sys.argv[1]])
n = "step"
{_NOTE}
print("tree started", flush=True)
time.sleep(60)
"""


class ProcessTree:
    """Builds tree steps and reads the pids they note (registered for teardown cleanup)."""

    def __init__(self, pid_dir: Path, leftover: list[int]) -> None:
        self.pid_dir = pid_dir
        self.leftover = leftover

    def step(self, name: str, **keys: Any) -> dict[str, Any]:
        """A step mapping for `make_pipeline` whose script starts the tree."""
        return {"name": name, "code": TREE_STEP_CODE, "args": [str(self.pid_dir)], **keys}

    def pids(self, timeout: float = 15) -> dict[str, int]:
        """Wait for the step, child and grandchild to note their pids; return them."""
        names = ("step", "child", "grandchild")
        _wait_until(lambda: all((self.pid_dir / n).exists() for n in names), timeout)
        pids = {n: int((self.pid_dir / n).read_text()) for n in names}
        self.leftover.extend(pids.values())
        return pids


@pytest.fixture
def process_tree(tmp_path: Path, leftover_pids: list[int]) -> ProcessTree:
    """A ProcessTree noting pids under `tmp_path/pids`."""
    d = tmp_path / "pids"
    d.mkdir()
    return ProcessTree(d, leftover_pids)
