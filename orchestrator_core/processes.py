"""Process identity and the one function that kills a process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def process_started(pid: int) -> float | None:
    """The start time of process `pid` (seconds since the epoch), or None when it is gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.Error, ValueError):
        return None


def start_time_now() -> float | None:
    """What `process_started` will say of a process forked now (to about 10 ms), without
    reading /proc of a process in the middle of its exec, which slows its start.

    The kernel counts a process's start on the boot clock (since Linux 3.17), and psutil adds
    the boot time, so the boot time plus the boot clock is the same figure. None where there
    is no boot clock."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is None:
        return None
    try:
        return psutil.boot_time() + time.clock_gettime(clock)
    except (OSError, psutil.Error):
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """True when `pid` runs and is the same process that started at `started` (no pid reuse)."""
    if not pid:
        return False
    now_started = process_started(pid)
    if now_started is None:
        return False
    return started is None or abs(now_started - started) < 0.5


def kill_tree(pid: int, grace: float = 2.0) -> None:
    """SIGTERM the process, its process group and every descendant, SIGKILL what is left
    after `grace` seconds. Descendants that left the group (setsid) are found by parentage."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    _signal_group(pid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    alive = _wait_gone(procs, grace)
    _signal_group(pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _wait_gone(alive, grace)


def _gone(proc: psutil.Process) -> bool:
    # A zombie has finished; whether its parent reaps it soon is not ours to wait for.
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for the processes to end; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_group_remnants(pgid: int, started_after: float | None, grace: float = 2.0) -> list[int]:
    """Kill what is left of a process group whose leader is gone (children of a crashed
    step), matching only processes started after the leader so a reused id is left alone.
    Returns the pids it signalled."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return []  # the usual case: nothing is left of the group
    found = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(proc.pid) != pgid or proc.pid == os.getpid():
                continue
        except (ProcessLookupError, PermissionError):
            continue
        created = proc.info.get("create_time")
        if started_after is not None and created is not None and created < started_after - 0.5:
            continue
        if not _gone(proc):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in _wait_gone(found, grace):
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in found]
