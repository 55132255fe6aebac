#!/usr/bin/env python3
"""Engine overhead, fan-out, discovery and CLI start-up, each beside a baseline in the same run.

    .venv/bin/python benchmarks/bench_engine.py

Prints a table; asserts nothing (figures go to the README).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator_core import discovery, jsonio  # noqa: E402
from orchestrator_core.engine import Engine  # noqa: E402
from orchestrator_core.history import RunHistory, new_run_id  # noqa: E402


def write_chain(
    pdir: Path, pid: str, n: int, body: str, *, chain: bool, max_parallel: int = 1
) -> None:
    folder = pdir / pid
    folder.mkdir(parents=True)
    (folder / "step.py").write_text(body)
    lines = [f"name: {pid}", "description: benchmark", f"max_parallel: {max_parallel}", "steps:"]
    for i in range(n):
        lines += [f"  - name: s{i:03d}", "    script: step.py", "    description: step"]
        if chain and i:
            lines.append(f"    depends_on: [s{i - 1:03d}]")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")


def run_engine(pdir: Path, pid: str) -> float:
    engine = Engine(pdir, trigger="cli")
    t0 = time.perf_counter()
    run_id = engine.submit(pid)
    record = engine.wait(run_id)
    elapsed = time.perf_counter() - t0
    assert record["state"] == "succeeded", record["state"]
    return elapsed


def bare_loop(script: Path, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    return time.perf_counter() - t0


def bench_chain(tmp: Path, n: int = 50, rounds: int = 5) -> None:
    """Engine vs bare loop, interleaved; the overhead is the median of the rounds' paired
    differences, which holds up better than a difference of medians on a noisy machine."""
    pdir = tmp / "chain" / "pipelines"
    write_chain(pdir, "chain", n, "", chain=True)
    script = pdir / "chain" / "step.py"
    bare_loop(script, 5)  # warm the page cache
    engine_times, bare_times = [], []
    for _ in range(rounds):
        bare_times.append(bare_loop(script, n))
        engine_times.append(run_engine(pdir, "chain"))
    e, b = statistics.median(engine_times), statistics.median(bare_times)
    per_step = sorted((en - ba) / n * 1000 for en, ba in zip(engine_times, bare_times, strict=True))
    print(f"{n}-step chain of empty scripts (median of {rounds} interleaved rounds)")
    print(f"  bare subprocess.run loop : {b * 1000:8.1f} ms  ({b / n * 1000:.2f} ms/step)")
    print(f"  engine                   : {e * 1000:8.1f} ms  ({e / n * 1000:.2f} ms/step)")
    print(
        f"  ratio {e / b:.2f}x, overhead {statistics.median(per_step):.2f} ms per step "
        f"(rounds {per_step[0]:.2f} to {per_step[-1]:.2f}; target <= 2 ms)"
    )


def bench_fanout(tmp: Path, n: int = 20, sleep: float = 0.5, parallel: int = 2) -> None:
    pdir = tmp / "fan" / "pipelines"
    write_chain(
        pdir, "fan", n, f"import time\ntime.sleep({sleep})\n", chain=False, max_parallel=parallel
    )
    elapsed = run_engine(pdir, "fan")
    ideal = n * sleep / parallel
    print(f"{n} independent steps of {sleep} s, max_parallel {parallel}")
    print(
        f"  ideal {ideal:.2f} s, engine {elapsed:.2f} s, {(elapsed / ideal - 1) * 100:+.1f} % (target within 5 %)"
    )


def bench_discovery(tmp: Path, n: int = 1000) -> None:
    pdir = tmp / "many" / "pipelines"
    pdir.mkdir(parents=True)
    for i in range(n):
        folder = pdir / f"p{i:04d}"
        folder.mkdir()
        for s in range(5):
            (folder / f"s{s}.py").write_text("")
        steps = "".join(
            f"  - name: s{s}\n    script: s{s}.py\n    description: step {s}\n"
            + (f"    depends_on: [s{s - 1}]\n" if s else "")
            for s in range(5)
        )
        (pdir / f"p{i:04d}.yaml").write_text(f"name: P{i}\ndescription: generated\nsteps:\n{steps}")
    t0 = time.perf_counter()
    found = discovery.discover_pipelines(pdir)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    discovery.discover_pipelines(pdir)
    warm = time.perf_counter() - t0
    assert len(found) == n and all(d.valid for d in found)
    # Baseline: just listing the folder and reading each YAML file, no parsing.
    t0 = time.perf_counter()
    for path in sorted(pdir.glob("*.yaml")):
        path.read_bytes()
    bare = time.perf_counter() - t0
    print(f"discovery + validation of {n} pipelines (5 steps each)")
    print(f"  read the files only {bare * 1000:7.1f} ms")
    print(f"  first scan          {cold * 1000:7.1f} ms (target < 1000 ms)")
    print(f"  rescan (cached)     {warm * 1000:7.1f} ms")


def bench_history(tmp: Path, n: int = 10_000) -> None:
    pdir = tmp / "hist" / "pipelines"
    history = RunHistory(pdir)
    folder = pdir / ".runs" / "p"
    folder.mkdir(parents=True)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        run_id = new_run_id(base + timedelta(seconds=i))
        record = {"run_id": run_id, "pipeline_id": "p", "state": "succeeded", "steps": {}}
        (folder / f"{run_id}.json").write_bytes(jsonio.dumps(record))
    t0 = time.perf_counter()
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    newest = history.list("p", limit=20)
    ours = time.perf_counter() - t0
    assert len(newest) == 20 and newest[0]["run_id"] + ".json" == names[-1]
    print(f"run history with {n:,} runs on disk")
    print(f"  list and sort the folder  {bare * 1000:6.1f} ms")
    print(f"  runs --limit 20           {ours * 1000:6.1f} ms")


def bench_cli_start(rounds: int = 5) -> None:
    def timed(argv: list[str]) -> float:
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
        return best

    bare = timed([sys.executable, "-c", "pass"])
    cli = timed([sys.executable, "-m", "orchestrator_core", "--help"])
    print(f"start-up (best of {rounds})")
    print(f"  python -c pass                    {bare * 1000:6.1f} ms")
    print(f"  python -m orchestrator_core --help {cli * 1000:6.1f} ms (target < 300 ms)")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bench_chain(Path(tmp))
        bench_fanout(Path(tmp))
        bench_discovery(Path(tmp))
        bench_history(Path(tmp))
        bench_cli_start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
