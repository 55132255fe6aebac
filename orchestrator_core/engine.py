"""Run plans in background threads: `submit` returns a run id at once; `cancel`, `active_runs`.

One coordinator thread per run starts each step as soon as its dependencies succeeded, at
most `max_parallel` at a time, each step in a worker thread of its own. Threads are daemons:
a server that stops does not wait for long steps (their status then reads `interrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import paths
from .discovery import find_pipeline
from .errors import OrchestratorError, PipelineBusyError, PipelineInvalidError
from .fingerprint import script_sha256
from .history import DEFAULT_KEEP_RUNS, RunHistory, keep_runs_setting, new_run_id
from .locks import RunLock, busy_message, owner_alive, read_owner
from .plan import Plan, Selection, make_plan
from .processes import kill_group_remnants, kill_tree, process_alive, process_started
from .runner import StepProcess, StepResult
from .spec import Pipeline, Step
from .status import RunState, StepState, iso, parse_iso, utc_now
from .steplog import StepLog
from .store import StatusStore

# A step's `running` state (with its pid, for crash recovery) is written, and its log file
# created, once it has run this long; a step that ends sooner goes straight to its final
# state, and has a log file only if it printed something. That spares a chain of short steps
# a status write and a file creation each: made while a process starts, both slow its start.
RECORD_RUNNING_AFTER = 0.02


class NothingToRunError(OrchestratorError):
    """The selection is empty (for example: nothing is outdated)."""


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run, for live output (CLI `--follow`, progress lines)."""

    kind: str  # run_started, step_started, step_output, step_retry, step_finished, run_finished
    run_id: str
    pipeline_id: str
    step: str | None = None
    state: str | None = None
    duration_s: float | None = None
    attempt: int | None = None
    stream: str | None = None
    text: str | None = None
    done: int = 0
    total: int = 0
    # run_started: the plan's warnings, and what the run did first (a stale lock taken over,
    # processes of a crashed run stopped).
    warnings: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


EventSink = Callable[[RunEvent], None]


@dataclass(frozen=True)
class ActiveRun:
    """A snapshot of a run in progress in this engine."""

    run_id: str
    pipeline_id: str
    trigger: str
    selection: Selection
    started_at: str
    total: int
    done: int
    running: tuple[str, ...]
    cancelling: bool


@dataclass
class _Run:
    run_id: str
    pipeline: Pipeline
    plan: Plan
    max_parallel: int
    continue_on_failure: bool
    lock: RunLock
    record: dict[str, Any]
    on_event: EventSink | None
    hashes: dict[str, str | None]
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    procs: dict[str, StepProcess] = field(default_factory=dict)
    outcome: dict[str, StepState] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    # The environment the run's steps inherit, taken once when the run starts.
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


class _WorkerPool:
    """The threads that execute one run's steps, one per running step at most. They live for
    the whole run: handing a step to a waiting thread costs less than starting a thread."""

    def __init__(self, execute: Callable[[Step], StepState], name: str) -> None:
        self._execute = execute
        self._name = name
        self._tasks: queue.SimpleQueue[Step | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[str, StepState]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.busy = 0

    def start(self, step: Step) -> None:
        """Hand `step` to a free thread (a new one if none is free)."""
        if self.busy == len(self._threads):
            thread = threading.Thread(
                target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.busy += 1
        self._tasks.put(step)

    def next_result(self) -> tuple[str, StepState]:
        """Wait for a step to end: (its name, the state to build on)."""
        result = self._results.get()
        self.busy -= 1
        return result

    def close(self) -> None:
        """Let the threads end, once they finish the steps they have, and wait for them."""
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while (step := self._tasks.get()) is not None:
            state = StepState.FAILED
            try:
                state = self._execute(step)
            except BaseException:  # a SystemExit from an event callback, say: the step counts
                pass  # as failed, and the thread lives on (else a step would wait for it forever)
            finally:  # whatever happens, the scheduler hears of it
                self._results.put((step.name, state))


class Engine:
    """Owns the background threads that run pipelines of one pipelines folder."""

    def __init__(
        self,
        pipelines_dir: Path | str | None = None,
        *,
        trigger: str = "dashboard",
        keep_runs: int | None = None,
        kill_grace: float = 2.0,
    ) -> None:
        self.pipelines_dir = paths.resolve_pipelines_dir(pipelines_dir)
        self.trigger = trigger
        self.kill_grace = kill_grace
        self.status = StatusStore(self.pipelines_dir)
        # A bad ORCHESTRATOR_KEEP_RUNS stops runs (which prune), not `status` or `plan`.
        self._keep_runs_error: OrchestratorError | None = None
        try:
            keep = keep_runs or keep_runs_setting()
        except OrchestratorError as exc:
            keep, self._keep_runs_error = DEFAULT_KEEP_RUNS, exc
        self.history = RunHistory(self.pipelines_dir, keep)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # --- planning -------------------------------------------------------------------------

    def load_pipeline(self, pipeline_id: str) -> Pipeline:
        """The valid pipeline with this id, or an error saying why it cannot run."""
        found = find_pipeline(self.pipelines_dir, pipeline_id)
        if not found.valid:
            more = len(found.problems) - 1
            tail = f" (and {more} more problem(s); see `validate {pipeline_id}`)" if more else ""
            raise PipelineInvalidError(
                f"pipeline '{pipeline_id}' is invalid: {found.problems[0]}{tail}"
            )
        return found.pipeline

    def plan(self, pipeline_id: str, selection: Selection | None = None) -> Plan:
        """What `submit` would run for this selection, without running anything."""
        pipeline = self.load_pipeline(pipeline_id)
        return self._plan(pipeline, selection or Selection())[0]

    def _plan(self, pipeline: Pipeline, selection: Selection) -> tuple[Plan, dict[str, str | None]]:
        hashes = {s.name: script_sha256(pipeline.script_path(s)) for s in pipeline.steps}
        entries = self.status.load(pipeline.id).entries
        return make_plan(pipeline, selection, entries, hashes), hashes

    # --- runs -----------------------------------------------------------------------------

    def submit(
        self,
        pipeline_id: str,
        selection: Selection | None = None,
        *,
        max_parallel: int | None = None,
        continue_on_failure: bool | None = None,
        on_event: EventSink | None = None,
    ) -> str:
        """Start a run in the background and return its id at once.

        Raises PipelineBusyError when the pipeline is already running (here or in another
        process), NothingToRunError for an empty selection, and other OrchestratorErrors for
        a missing or invalid pipeline or step."""
        if self._keep_runs_error is not None:
            raise self._keep_runs_error
        selection = selection or Selection()
        pipeline = self.load_pipeline(pipeline_id)
        if max_parallel is not None and max_parallel < 1:
            raise OrchestratorError(f"--max-parallel must be at least 1, got {max_parallel}")
        plan, hashes = self._plan(pipeline, selection)
        if not plan.steps:
            raise NothingToRunError(
                f"nothing to run in '{pipeline_id}' for {selection.describe()}: every step is up to date"
            )
        started = utc_now()
        run_id = new_run_id(started)
        lock = RunLock(paths.run_lock_path(self.pipelines_dir, pipeline_id), pipeline_id)
        with self._lock:
            for other in self._runs.values():
                if other.pipeline.id == pipeline_id and not other.finished.is_set():
                    raise PipelineBusyError(
                        busy_message(
                            pipeline_id,
                            {
                                "run_id": other.run_id,
                                "started_at": other.record["started_at"],
                                "pid": os.getpid(),
                                "trigger": self.trigger,
                            },
                        )
                    )
            lock.acquire(run_id, iso(started), self.trigger)
        try:
            notices = self._take_over(pipeline, lock)
            run = self._new_run(pipeline, plan, hashes, run_id, started, lock, notices)
            run.max_parallel = max_parallel or pipeline.max_parallel
            run.continue_on_failure = (
                pipeline.continue_on_failure if continue_on_failure is None else continue_on_failure
            )
            run.record["max_parallel"] = run.max_parallel
            run.record["continue_on_failure"] = run.continue_on_failure
            run.on_event = on_event
            self.history.write(run.record)
            self.status.set_fields(
                pipeline_id,
                {
                    n: {  # the previous run's times and outcome go (`last_run` stays)
                        "state": StepState.QUEUED.value,
                        "run_id": run_id,
                        "pid": None,
                        "pid_started": None,
                        "attempt": None,
                        "started_at": None,
                        "finished_at": None,
                        "duration_s": None,
                        "exit_code": None,
                        "error": None,
                        "skip_reason": None,
                    }
                    for n in plan.steps
                },
            )
        except BaseException:
            lock.release()
            raise
        with self._lock:
            self._runs[run_id] = run
            self._forget_old_runs()
        try:
            self._emit(
                run,
                RunEvent(
                    "run_started",
                    run_id,
                    pipeline_id,
                    total=len(plan.steps),
                    warnings=tuple(plan.warnings),
                    notices=tuple(run.record["notices"]),
                ),
            )
        except BaseException:  # Ctrl-C while the CLI prints the header: the run is cancelled
            run.cancel_event.set()
            raise
        finally:  # either way the run is carried to its end and recorded
            threading.Thread(
                target=self._coordinate,
                args=(run,),
                name=f"orchestrator-run-{run_id}",
                daemon=True,
            ).start()
        return run_id

    def _take_over(self, pipeline: Pipeline, lock: RunLock) -> list[str]:
        """After a crashed run: stop the step processes it left behind, so a step never runs
        twice at once (their pids were kept as `orphan_pid` when the steps were recovered)."""
        notices = []
        if lock.took_over:
            old = lock.took_over
            notices.append(
                f"took over the lock of run {old.get('run_id')} (pid {old.get('pid')} is gone)"
            )
            if isinstance(old.get("run_id"), str):
                with contextlib.suppress(OSError, ValueError):  # its history, as it stands
                    self.history.settle(pipeline.id, old["run_id"])
        entries = self.status.load(pipeline.id).entries
        cleared: dict[str, dict[str, Any]] = {}
        for name, entry in entries.items():
            pid = entry.get("orphan_pid")
            if not pid:
                continue
            started = entry.get("orphan_pid_started")
            if started is None:  # who has that pid now cannot be told: it is left alone
                notices.append(
                    f"did not stop pid {pid} of step '{name}': its start time is unknown"
                )
            elif process_alive(pid, started):
                kill_tree(pid, self.kill_grace)
                notices.append(f"stopped process {pid} left running by step '{name}'")
            else:
                for left in kill_group_remnants(pid, started, self.kill_grace):
                    notices.append(f"stopped process {left} left behind by step '{name}'")
            cleared[name] = {"orphan_pid": None, "orphan_pid_started": None}
        if cleared:
            self.status.set_fields(pipeline.id, cleared)
        return notices

    def _new_run(
        self,
        pipeline: Pipeline,
        plan: Plan,
        hashes: dict[str, str | None],
        run_id: str,
        started: Any,
        lock: RunLock,
        notices: list[str],
    ) -> _Run:
        me = os.getpid()
        record: dict[str, Any] = {
            "run_id": run_id,
            "pipeline_id": pipeline.id,
            "trigger": self.trigger,
            "selection": plan.selection.to_dict(),
            "state": RunState.RUNNING.value,
            "started_at": iso(started),
            "finished_at": None,
            "duration_s": None,
            "pid": me,
            "pid_started": process_started(me),
            "plan": [list(w) for w in plan.waves],
            "warnings": list(plan.warnings),
            "notices": notices,
            "steps": {
                n: {
                    "state": StepState.QUEUED.value,
                    "started_at": None,
                    "finished_at": None,
                    "duration_s": None,
                    "exit_code": None,
                    "attempts": 0,
                    "error": None,
                    "log": paths.log_relpath(pipeline.id, run_id, n),
                }
                for n in plan.steps
            },
        }
        return _Run(
            run_id, pipeline, plan, pipeline.max_parallel, False, lock, record, None, hashes
        )

    def _forget_old_runs(self, keep: int = 100) -> None:
        """A long-lived dashboard keeps only the newest finished runs in memory (the history
        on disk has them all). Called with `self._lock` held."""
        done = [rid for rid, r in self._runs.items() if r.finished.is_set()]
        for rid in sorted(done)[:-keep] if len(done) > keep else []:
            del self._runs[rid]

    def cancel(self, run_id: str) -> bool:
        """Ask a run to stop: running steps are killed (tree and all), the rest skipped.
        Returns at once; False when this engine has no such active run."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is None or run.finished.is_set():
            return False
        run.cancel_event.set()
        with run.guard:
            procs = list(run.procs.values())
        for proc in procs:
            threading.Thread(target=proc.cancel, daemon=True).start()
        return True

    def stop_other_process_run(self, pipeline_id: str) -> str:
        """Stop a run of `pipeline_id` that another process started from the command line: it
        gets SIGTERM, which the CLI treats as Ctrl-C (cancel the steps, record `cancelled`).
        Returns what was done; raises OrchestratorError when there is nothing this may stop."""
        owner = read_owner(paths.run_lock_path(self.pipelines_dir, pipeline_id))
        if not owner_alive(owner) or owner.get("pid") == os.getpid():
            raise OrchestratorError(f"no run of '{pipeline_id}' is in progress in another process")
        if owner.get("trigger") != "cli":
            raise OrchestratorError(
                f"run {owner.get('run_id')} of '{pipeline_id}' belongs to another dashboard "
                f"(pid {owner.get('pid')}); cancel it there"
            )
        os.kill(owner["pid"], signal.SIGTERM)
        return f"asked the command-line run {owner.get('run_id')} (pid {owner['pid']}) to stop"

    def active_runs(self) -> list[ActiveRun]:
        """Runs of this engine still in progress, oldest first."""
        with self._lock:
            runs = [r for r in self._runs.values() if not r.finished.is_set()]
        out = []
        for r in runs:
            with r.guard:
                running = tuple(r.procs)
                done = len(r.outcome)
            out.append(
                ActiveRun(
                    run_id=r.run_id,
                    pipeline_id=r.pipeline.id,
                    trigger=self.trigger,
                    selection=r.plan.selection,
                    started_at=r.record["started_at"],
                    total=len(r.plan.steps),
                    done=done,
                    running=running,
                    cancelling=r.cancel_event.is_set(),
                )
            )
        return out

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the run ends (or `timeout`); its final record, or None if still running."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return self.history.get(run_id)
        if not run.finished.wait(timeout):
            return None
        return run.record

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every active run and wait for them to end (tests, server stop)."""
        for active in self.active_runs():
            self.cancel(active.run_id)
        for active in self.active_runs():
            self.wait(active.run_id, timeout)

    # --- inside a run ---------------------------------------------------------------------

    def _emit(self, run: _Run, event: RunEvent) -> None:
        """Tell the run's event sink; an error (even a SystemExit) in it does not disturb the
        run. A Ctrl-C does: the CLI's sink runs in its main thread at the run's start."""
        if run.on_event is None:
            return
        with contextlib.suppress(Exception, SystemExit):
            run.on_event(event)

    def _coordinate(self, run: _Run) -> None:
        try:
            self._schedule(run)
        except Exception as exc:  # a full disk, say: the run ends failed, never hangs
            run.record["state"] = RunState.FAILED.value
            run.record["notices"].append(f"the run could not be recorded completely: {exc!r}")
            if run.record["finished_at"] is None:
                finished = utc_now()
                run.record["finished_at"] = iso(finished)
                started = parse_iso(run.record["started_at"])
                run.record["duration_s"] = round((finished - started).total_seconds(), 3)
            with contextlib.suppress(Exception):  # else the record on disk stays `running`
                self.history.write(run.record)
        finally:
            run.lock.release()
            run.finished.set()
            self._emit(
                run,
                RunEvent(
                    "run_finished",
                    run.run_id,
                    run.pipeline.id,
                    state=run.record["state"],
                    duration_s=run.record["duration_s"],
                    done=len(run.outcome),
                    total=len(run.plan.steps),
                ),
            )

    def _schedule(self, run: _Run) -> None:
        pool = _WorkerPool(functools.partial(self._execute, run), f"orchestrator-{run.run_id}")
        try:
            pending, halted_by = self._dispatch(run, pool)
        finally:  # even when a skip could not be recorded, no worker is left waiting
            pool.close()  # and the steps' updates land before the final record
        if pending:
            if run.cancel_event.is_set():
                reason = "run cancelled"
            else:
                reason = f"not started: step '{halted_by}' {run.outcome[halted_by].value}"
            self._finish_skipped(run, dict.fromkeys(pending, reason))
        finished = utc_now()
        outcomes = set(run.outcome.values())
        if run.cancel_event.is_set():
            final = RunState.CANCELLED
        elif outcomes <= {StepState.SUCCEEDED}:
            final = RunState.SUCCEEDED
        else:
            final = RunState.FAILED
        run.record["state"] = final.value
        run.record["finished_at"] = iso(finished)
        started = run.record["started_at"]
        run.record["duration_s"] = round((finished - parse_iso(started)).total_seconds(), 3)
        self.history.write(run.record)
        self.history.prune(run.pipeline.id)

    def _dispatch(self, run: _Run, pool: _WorkerPool) -> tuple[list[str], str | None]:
        """Start steps as their dependencies succeed until nothing runs; returns the steps
        never started and the step whose failure halted the run (None if none did)."""
        chosen = set(run.plan.steps)
        deps = {n: [d for d in run.pipeline.step(n).depends_on if d in chosen] for n in chosen}
        pending = list(run.plan.steps)
        root_cause: dict[str, str] = {}
        halted_by: str | None = None
        while True:
            if not run.cancel_event.is_set() and halted_by is None:
                self._start_ready(run, pool, pending, deps, root_cause)
            if not pool.busy:
                return pending, halted_by
            name, state = pool.next_result()
            if state is not StepState.SUCCEEDED and not run.continue_on_failure:
                halted_by = halted_by or name

    def _start_ready(
        self,
        run: _Run,
        pool: _WorkerPool,
        pending: list[str],
        deps: dict[str, list[str]],
        root_cause: dict[str, str],
    ) -> None:
        """Start the pending steps whose dependencies all succeeded (in plan order, while
        there is room) and skip those with a dependency that did not."""
        for name in list(pending):
            if pool.busy >= run.max_parallel:
                return
            states = [run.outcome.get(d) for d in deps[name]]
            bad = [
                d
                for d, s in zip(deps[name], states, strict=True)
                if s not in (None, StepState.SUCCEEDED)
            ]
            if bad:
                root_cause[name] = root = root_cause.get(bad[0], bad[0])
                self._finish_skipped(run, {name: f"upstream failed: {root}"})
                pending.remove(name)
            elif all(s is StepState.SUCCEEDED for s in states):
                pending.remove(name)
                pool.start(run.pipeline.step(name))

    def _finish_skipped(self, run: _Run, reasons: dict[str, str]) -> None:
        now = iso(utc_now())
        self.status.set_fields(
            run.pipeline.id,
            {
                n: {
                    "state": StepState.SKIPPED.value,
                    "skip_reason": r,
                    "pid": None,
                    "pid_started": None,
                    "run_id": run.run_id,
                    "attempt": None,
                    "started_at": None,
                    "finished_at": now,
                    "duration_s": None,
                    "exit_code": None,
                    "error": None,
                }
                for n, r in reasons.items()
            },
        )
        for n, r in reasons.items():
            with run.guard:
                run.outcome[n] = StepState.SKIPPED
                run.record["steps"][n].update(state=StepState.SKIPPED.value, error=r)
            self._emit(
                run,
                RunEvent(
                    "step_finished",
                    run.run_id,
                    run.pipeline.id,
                    step=n,
                    state="skipped",
                    text=r,
                    done=len(run.outcome),
                    total=len(run.plan.steps),
                ),
            )

    def _execute(self, run: _Run, step: Step) -> StepState:
        """Run one step to its end and record it; the state to build on (FAILED when the
        result could not be recorded)."""
        state = StepState.FAILED
        try:
            result, started, attempt = self._run_attempts(run, step)
            self._record_result(run, step, result, started, attempt)
            state = result.state  # a result that could not be recorded is not built upon
        except Exception as exc:  # a bug or a full disk: record it, and never hang the run
            now = utc_now()
            error = f"internal error: {exc!r}"
            failed = StepResult(StepState.FAILED, None, now, now, error, None)
            with contextlib.suppress(Exception):
                self._record_result(run, step, failed, None, 1)
            with run.guard:  # the run's record tells it even when the status file cannot
                run.record["steps"][step.name].update(
                    state=StepState.FAILED.value, finished_at=iso(now), error=error
                )
        finally:
            with run.guard:
                run.procs.pop(step.name, None)
                run.outcome[step.name] = state
        return state

    def _run_attempts(self, run: _Run, step: Step) -> tuple[StepResult, datetime | None, int]:
        """Run the step's attempts; its result, when its first process started (None if none
        did: cancelled before, or the script could not start) and the last attempt's number."""
        pid_name = run.pipeline.id
        log_path = self.history.log_path(pid_name, run.run_id, step.name)
        env = {
            **run.environ,
            **step.env,
            "PIPELINE_ID": pid_name,
            "PIPELINE_STEP": step.name,
            "PIPELINE_RUN_ID": run.run_id,
            "PYTHONUNBUFFERED": "1",
        }
        if step.timeout is not None:
            # A step that knows its timeout can stop in time to save its progress.
            env["PIPELINE_STEP_TIMEOUT"] = f"{step.timeout:g}"
        argv = [sys.executable, str(run.pipeline.script_path(step)), *step.args]
        cwd = str(paths.workdir(self.pipelines_dir))
        attempts = step.retries + 1
        first_start = None
        self._emit(
            run,
            RunEvent(
                "step_started",
                run.run_id,
                pid_name,
                step=step.name,
                attempt=1,
                done=len(run.outcome),
                total=len(run.plan.steps),
            ),
        )
        log = StepLog(log_path)
        try:
            for attempt in range(1, attempts + 1):
                on_line = None
                if run.on_event is not None:

                    def on_line(stream: str, text: str, _a: int = attempt) -> None:
                        self._emit(
                            run,
                            RunEvent(
                                "step_output",
                                run.run_id,
                                pid_name,
                                step=step.name,
                                stream=stream,
                                text=text,
                                attempt=_a,
                            ),
                        )

                if attempts > 1:
                    log.write("system", f"attempt {attempt} of {attempts}")
                proc = StepProcess(
                    argv,
                    cwd=cwd,
                    env=env,
                    log=log,
                    on_line=on_line,
                    kill_grace=self.kill_grace,
                )
                with run.guard:
                    if run.cancel_event.is_set():
                        proc.cancel()
                    run.procs[step.name] = proc
                if proc.start() is not None:  # not cancelled first, and the script could start
                    first_start = first_start or proc.started_at
                    with run.guard:
                        run.record["steps"][step.name].update(
                            state="running", started_at=iso(first_start), attempts=attempt
                        )
                record_running = functools.partial(
                    self._record_running, run, step, proc, attempt, first_start
                )
                result = proc.wait(
                    step.timeout, on_running=record_running, running_after=RECORD_RUNNING_AFTER
                )
                retry = (
                    result.state in (StepState.FAILED, StepState.TIMED_OUT)
                    and attempt < attempts
                    and not run.cancel_event.is_set()
                )
                if not retry:
                    break
                log.write(
                    "system",
                    f"attempt {attempt} {result.state.value} (exit code {result.exit_code}); "
                    f"retrying in {step.retry_delay:g} s",
                )
                self._emit(
                    run,
                    RunEvent(
                        "step_retry",
                        run.run_id,
                        pid_name,
                        step=step.name,
                        state=result.state.value,
                        attempt=attempt + 1,
                        done=len(run.outcome),
                        total=len(run.plan.steps),
                    ),
                )
                if run.cancel_event.wait(step.retry_delay):
                    result = dataclasses.replace(
                        result,
                        state=StepState.CANCELLED,
                        finished_at=utc_now(),
                        error=f"cancelled while waiting to retry; attempt {attempt}: {result.error}",
                    )
                    break
        finally:
            log.close()
        return result, first_start, attempt

    def _record_running(
        self, run: _Run, step: Step, proc: StepProcess, attempt: int, started: Any
    ) -> None:
        """Write that the step runs, with its pid: after a crash, recovery finds the process.
        Its log file is created now too, if its output has not done so, to be watched."""
        proc.log.open()
        self.status.set_fields(
            run.pipeline.id,
            {
                step.name: {
                    "state": StepState.RUNNING.value,
                    "run_id": run.run_id,
                    "attempt": attempt,
                    "pid": proc.pid,
                    "pid_started": proc.pid_started(),
                    "started_at": iso(started),
                    "finished_at": None,
                    "duration_s": None,
                    "exit_code": None,
                    "error": None,
                    "skip_reason": None,
                }
            },
        )

    def _record_result(
        self, run: _Run, step: Step, result: StepResult, started: datetime | None, attempt: int
    ) -> None:
        """Write the step's final status. The run record is written at the end of the run
        (one write per step less); until then readers take step states from the status file."""
        duration = (
            None if started is None else round((result.finished_at - started).total_seconds(), 3)
        )
        fields: dict[str, Any] = {
            "state": result.state.value,
            "run_id": run.run_id,
            "attempt": attempt,
            "pid": None,
            "pid_started": None,
            "started_at": iso(started),
            "finished_at": iso(result.finished_at),
            "last_run": iso(result.finished_at),
            "duration_s": duration,
            "exit_code": result.exit_code,
            "error": result.error,
        }
        if result.state is StepState.SUCCEEDED:
            fields.update(
                last_success_at=iso(result.finished_at),
                success_script_sha256=run.hashes.get(step.name),
                success_config_sha256=step.config_sha256(),
            )
        self.status.set_fields(run.pipeline.id, {step.name: fields})
        with run.guard:
            run.record["steps"][step.name].update(
                state=result.state.value,
                started_at=iso(started),
                finished_at=iso(result.finished_at),
                duration_s=duration,
                exit_code=result.exit_code,
                attempts=attempt,
                error=result.error,
            )
            done = len(run.outcome) + 1

        self._emit(
            run,
            RunEvent(
                "step_finished",
                run.run_id,
                run.pipeline.id,
                step=step.name,
                state=result.state.value,
                duration_s=duration,
                attempt=attempt,
                done=done,
                total=len(run.plan.steps),
            ),
        )
