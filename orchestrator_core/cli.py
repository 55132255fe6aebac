"""The command line: `python -m orchestrator_core` (or `orchestrator`). Everything headless.

Exit codes: 0 all selected steps succeeded; 1 a step failed, timed out or was skipped, or a
pipeline is invalid (`validate`); 2 usage, validation or "already running" errors; 130 when
interrupted (Ctrl-C cancels the running steps first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # as for a process killed by SIGPIPE: the reader of stdout left


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--pipelines-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="pipelines folder (default: $ORCHESTRATOR_PIPELINES_DIR or ./pipelines of the project)",
    )
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="File-first pipeline orchestrator: pipelines are YAML files plus Python step scripts.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = add("list", "list discovered pipelines, valid or not")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("validate", "check pipeline files; exit 1 and print every problem if any is invalid")
    p.add_argument("pipeline", nargs="?", help="one pipeline id (default: all)")

    for name, help_text in (
        ("plan", "show which steps a run would start, in which order, and why"),
        ("run", "run a pipeline, a step or a slice of it in dependency order"),
    ):
        p = add(name, help_text)
        p.add_argument("pipeline", help="pipeline id")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--step", metavar="S", help="only step S (its dependencies are not run)")
        group.add_argument(
            "--from", dest="from_step", metavar="S", help="S and everything downstream"
        )
        group.add_argument("--to", dest="to_step", metavar="S", help="S and everything upstream")
        group.add_argument(
            "--only-outdated", action="store_true", help="outdated steps and what depends on them"
        )
        if name == "plan":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            p.add_argument(
                "--max-parallel", type=int, metavar="N", help="steps at once (default: YAML, 1)"
            )
            p.add_argument(
                "--continue-on-failure",
                action="store_true",
                default=None,
                help="on a failure, skip only the failed step's dependents",
            )
            p.add_argument(
                "--follow", action="store_true", help="print the steps' output as it comes"
            )

    p = add("status", "show the status of a pipeline's steps")
    p.add_argument("pipeline")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("mark-tested", "mark a step as tested (or untested with --undo)")
    p.add_argument("pipeline")
    p.add_argument("step")
    p.add_argument("--undo", action="store_true", help="mark it untested")

    p = add("reset", "clear the run state of one step or all steps (keeps 'tested')")
    p.add_argument("pipeline")
    p.add_argument("step", nargs="?")

    p = add("runs", "list past runs, newest first")
    p.add_argument("pipeline", nargs="?")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("logs", "print the logs of a run (all steps, or one)")
    p.add_argument("run_id")
    p.add_argument("step", nargs="?")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    from .errors import OrchestratorError

    # The core's warnings (a corrupt status file moved aside) as one plain line each.
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)

    # cron's stop, and a closed terminal, are a Ctrl-C: the steps are cancelled, not left on.
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        return _dispatch(args)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`| head`): quiet, and never a false success
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a read-only or full disk under the pipelines folder, say
        _say(f"error: {exc}; check that the folder exists, is writable and has free space")
        return EXIT_USAGE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str) -> None:
    """A line on stderr that cannot fail (the terminal may be gone: SIGHUP)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's final flush does not fail once more."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _dispatch(args: argparse.Namespace) -> int:
    from . import paths

    pdir = paths.resolve_pipelines_dir(getattr(args, "pipelines_dir", None))
    handler = {
        "list": cmd_list,
        "validate": cmd_validate,
        "plan": cmd_plan,
        "run": cmd_run,
        "status": cmd_status,
        "mark-tested": cmd_mark_tested,
        "reset": cmd_reset,
        "runs": cmd_runs,
        "logs": cmd_logs,
    }[args.command]
    return handler(args, pdir)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _selection(args: argparse.Namespace):
    from .plan import Selection

    if args.step:
        return Selection("step", args.step)
    if args.from_step:
        return Selection("from", args.from_step)
    if args.to_step:
        return Selection("to", args.to_step)
    if args.only_outdated:
        return Selection("outdated")
    return Selection()


def _require_folder(pdir: Path) -> None:
    """A mistyped --pipelines-dir is an error, not an empty (and so valid) folder."""
    from .errors import OrchestratorError

    if not pdir.is_dir():
        what = "is not a folder" if pdir.exists() else "does not exist"
        raise OrchestratorError(
            f"the pipelines folder {pdir} {what}; check --pipelines-dir or "
            "ORCHESTRATOR_PIPELINES_DIR"
        )


def cmd_list(args: argparse.Namespace, pdir: Path) -> int:
    """`list`: every pipeline with its validity and step states."""
    from collections import Counter

    from .discovery import discover_pipelines
    from .store import StatusStore

    _require_folder(pdir)
    store = StatusStore(pdir)
    items = []
    for d in discover_pipelines(pdir):
        counts: Counter[str] = Counter()
        if d.valid:
            entries = store.load(d.id).entries
            for name in d.pipeline.step_names:
                counts[(entries.get(name) or {}).get("state", "never_run")] += 1
        items.append(
            {
                "id": d.id,
                "name": d.name,
                "description": d.description,
                "path": str(d.path),
                "layout": d.layout,
                "valid": d.valid,
                "steps": len(d.pipeline.steps) if d.valid else None,
                "states": dict(counts),
                "problems": [str(p) for p in d.problems],
            }
        )
    if args.json:
        _print_json(items)
        return EXIT_OK
    if not items:
        print(f"no pipelines in {pdir}")
        return EXIT_OK
    rows = []
    for it in items:
        if it["valid"]:
            summary = ", ".join(f"{n} {s}" for s, n in sorted(it["states"].items()))
            rows.append([it["id"], str(it["steps"]), "valid", summary, it["name"]])
        else:
            rows.append([it["id"], "-", "INVALID", f"{len(it['problems'])} problem(s)", it["name"]])
    _table(rows, ["ID", "STEPS", "VALID", "STATES", "NAME"])
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, pdir: Path) -> int:
    """`validate`: print every problem; exit 1 when anything is invalid."""
    from .discovery import discover_pipelines, find_pipeline

    _require_folder(pdir)
    found = [find_pipeline(pdir, args.pipeline)] if args.pipeline else discover_pipelines(pdir)
    bad = 0
    for d in found:
        if d.valid:
            print(f"ok       {d.id} ({len(d.pipeline.steps)} steps)")
        else:
            bad += 1
            print(f"INVALID  {d.id}")
            for problem in d.problems:
                print(f"  {problem}")
    if not found:
        print(f"no pipelines in {pdir}")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_plan(args: argparse.Namespace, pdir: Path) -> int:
    """`plan`: what a run would do, without running anything."""
    from .engine import Engine

    plan = Engine(pdir, trigger="cli").plan(args.pipeline, _selection(args))
    if args.json:
        _print_json(plan.to_dict())
        return EXIT_OK
    print(f"plan for {plan.pipeline_id}: {plan.selection.describe()}, {len(plan.steps)} step(s)")
    for i, wave in enumerate(plan.waves, start=1):
        print(f"wave {i}:")
        for name in wave:
            print(f"  run   {name}: {plan.reasons[name]}")
    for name, reason in plan.skipped.items():
        print(f"  skip  {name}: {reason}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if not plan.steps:
        print("nothing to run")
    return EXIT_OK


class _RunPrinter:
    """Prints one line as each step starts and ends, and the output with --follow."""

    def __init__(self, follow: bool, selection: Any) -> None:
        self.follow = follow
        self.selection = selection
        self.lock = threading.Lock()

    def __call__(self, ev: Any) -> None:
        with self.lock:
            # The header comes from the event too, so no step line can precede or split it.
            if ev.kind == "run_started":
                for warning in ev.warnings:
                    print(f"warning: {warning}", file=sys.stderr, flush=True)
                for notice in ev.notices:
                    print(f"note: {notice}", file=sys.stderr, flush=True)
                print(
                    f"run {ev.run_id} of {ev.pipeline_id}: {self.selection.describe()}, "
                    f"{ev.total} step(s)",
                    flush=True,
                )
            elif ev.kind == "step_started":
                print(f"[{ev.done}/{ev.total}] start   {ev.step}", flush=True)
            elif ev.kind == "step_retry":
                print(
                    f"[{ev.done}/{ev.total}] retry   {ev.step} (attempt {ev.attempt}, previous {ev.state})",
                    flush=True,
                )
            elif ev.kind == "step_finished":
                detail = f"{ev.duration_s:.2f}s" if ev.duration_s is not None else (ev.text or "")
                print(f"[{ev.done}/{ev.total}] {ev.state:<9} {ev.step} {detail}", flush=True)
            elif ev.kind == "step_output" and self.follow:
                stream = sys.stderr if ev.stream == "stderr" else sys.stdout
                print(f"  {ev.step} | {ev.text}", file=stream, flush=True)


def cmd_run(args: argparse.Namespace, pdir: Path) -> int:
    """`run`: run in the foreground; Ctrl-C cancels the running steps."""
    from .engine import Engine, NothingToRunError

    engine = Engine(pdir, trigger="cli")
    selection = _selection(args)
    try:
        run_id = engine.submit(
            args.pipeline,
            selection,
            max_parallel=args.max_parallel,
            continue_on_failure=args.continue_on_failure,
            on_event=_RunPrinter(args.follow, selection),
        )
    except NothingToRunError as exc:
        print(str(exc))
        return EXIT_OK
    except KeyboardInterrupt:  # during the run's start: it is cancelled and recorded so
        _say("interrupted: cancelling the run...")
        engine.shutdown()
        return EXIT_INTERRUPTED
    interrupted = False
    try:
        while (record := engine.wait(run_id, timeout=0.25)) is None:
            pass
    except KeyboardInterrupt:
        interrupted = True
        _say("interrupted: cancelling the running steps...")
        engine.cancel(run_id)
        record = _wait_while_cancelling(engine, run_id)
    states = [s["state"] for s in record["steps"].values()]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    took = f" in {record['duration_s']:.2f}s" if record.get("duration_s") is not None else ""
    try:
        print(f"run {record['state']}{took}: {counts}")
        print(f"logs: python -m orchestrator_core logs {run_id}", flush=True)
    except OSError:  # `run ... | head`, or a closed terminal: the outcome is the exit code
        _silence_stdout()
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if record["state"] == "succeeded" else EXIT_FAILED


def _wait_while_cancelling(engine: Any, run_id: str) -> dict[str, Any]:
    """Wait for a cancelled run to end; more Ctrl-C cannot leave its steps running."""
    while True:
        try:
            while (record := engine.wait(run_id, timeout=0.25)) is None:
                pass
            return record
        except KeyboardInterrupt:
            _say("still stopping the steps (SIGKILL follows after a short grace)...")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _load_valid(pdir: Path, pipeline_id: str):
    from .engine import Engine

    return Engine(pdir, trigger="cli").load_pipeline(pipeline_id)


def cmd_status(args: argparse.Namespace, pdir: Path) -> int:
    """`status`: the steps table."""
    from .pipeline_state import step_views
    from .store import StatusStore

    pipeline = _load_valid(pdir, args.pipeline)
    views, _ = step_views(StatusStore(pdir), pipeline)  # notices were logged as warnings
    if args.json:
        _print_json(
            {"pipeline": pipeline.id, "name": pipeline.name, "steps": [v.to_dict() for v in views]}
        )
        return EXIT_OK
    rows = []
    for v in views:
        tested = ("yes (stale)" if v.tested_stale else "yes") if v.tested else "no"
        duration = f"{v.duration_s:.2f}s" if v.duration_s is not None else "-"
        rows.append(
            [
                v.name,
                v.state.value,
                tested,
                v.last_run or "-",
                duration,
                "-" if v.exit_code is None else str(v.exit_code),
                "; ".join(v.outdated) or "up to date",
            ]
        )
    print(f"{pipeline.id}: {pipeline.name}")
    _table(rows, ["STEP", "STATE", "TESTED", "LAST RUN", "DURATION", "EXIT", "OUTDATED"])
    problems = [v for v in views if v.state.is_problem and v.error]
    for v in problems:
        print(f"\n{v.name} {v.state.value}; last error lines:")
        print("\n".join(f"  {line}" for line in v.error.splitlines()[-5:]))
    return EXIT_OK


def cmd_mark_tested(args: argparse.Namespace, pdir: Path) -> int:
    """`mark-tested`."""
    from .pipeline_state import mark_tested
    from .store import StatusStore

    pipeline = _load_valid(pdir, args.pipeline)
    mark_tested(StatusStore(pdir), pipeline, args.step, undo=args.undo)
    print(f"{args.pipeline}: {args.step} marked {'untested' if args.undo else 'tested'}")
    return EXIT_OK


def cmd_reset(args: argparse.Namespace, pdir: Path) -> int:
    """`reset`."""
    from .pipeline_state import reset_steps
    from .store import StatusStore

    pipeline = _load_valid(pdir, args.pipeline)
    names = reset_steps(StatusStore(pdir), pipeline, args.step)
    print(f"{args.pipeline}: reset {', '.join(names)}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, pdir: Path) -> int:
    """`runs`: run history, newest first."""
    from .history import RunHistory

    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    history = RunHistory(pdir)
    if args.pipeline and args.pipeline not in history.pipeline_ids():
        from .discovery import find_pipeline

        find_pipeline(pdir, args.pipeline)  # a typo gets "no pipeline ...; did you mean"
    records = history.list(args.pipeline, limit=args.limit)
    if args.json:
        _print_json(records)
        return EXIT_OK
    if not records:
        print("no runs yet")
        return EXIT_OK
    rows = []
    for r in records:
        states = [s["state"] for s in r.get("steps", {}).values()]
        ok = states.count("succeeded")
        duration = f"{r['duration_s']:.2f}s" if r.get("duration_s") is not None else "-"
        sel = r.get("selection") or {}
        selection = sel.get("kind", "all") + (f" {sel['step']}" if sel.get("step") else "")
        rows.append(
            [
                r["run_id"],
                r["pipeline_id"],
                r.get("trigger", "?"),
                r["state"],
                r["started_at"],
                duration,
                f"{ok}/{len(states)}",
                selection,
            ]
        )
    _table(rows, ["RUN", "PIPELINE", "TRIGGER", "STATE", "STARTED", "DURATION", "OK", "SELECTION"])
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, pdir: Path) -> int:
    """`logs`: the step logs of a run."""
    from .errors import SelectionError
    from .history import RunHistory

    record = RunHistory(pdir).get(args.run_id)
    steps = record.get("steps", {})
    if args.step and args.step not in steps:
        from .spec import did_you_mean

        raise SelectionError(
            f"run {args.run_id} has no step '{args.step}'{did_you_mean(args.step, steps)}"
        )
    names = [args.step] if args.step else list(steps)
    for name in names:
        if not args.step:
            print(f"===== {name} ({steps[name]['state']}) =====")
        path = pdir / steps[name]["log"]
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    sys.stdout.write(line)
        except FileNotFoundError:  # a step that ran briefly and printed nothing has no file
            if not steps[name].get("started_at"):
                print("(no log: the step did not start)")
    return EXIT_OK
