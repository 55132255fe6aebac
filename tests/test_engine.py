"""The engine's scheduling: max_parallel from recorded times, what happens on a failure
(halt, or continue_on_failure), events, and what submit refuses."""

from __future__ import annotations

import itertools

import pytest

from orchestrator_core.errors import OrchestratorError, PipelineBusyError, PipelineNotFoundError
from orchestrator_core.plan import Selection

# Each step notes its own start and end (time.time()) in <dir>/<step>.start / .end.
TIMED = """\
out = pathlib.Path(sys.argv[1])
step = os.environ["PIPELINE_STEP"]
(out / f"{step}.start").write_text(repr(time.time()))
{body}
(out / f"{step}.end").write_text(repr(time.time()))
"""
# Wait (bounded) until another step has started: with room for two, two must overlap.
MEET = """\
deadline = time.time() + 10
while time.time() < deadline and not any(
    p.name != f"{step}.start" for p in out.glob("*.start")
):
    time.sleep(0.01)
"""


def intervals(out_dir, names):
    return {
        n: (float((out_dir / f"{n}.start").read_text()), float((out_dir / f"{n}.end").read_text()))
        for n in names
    }


def max_overlap(spans):
    events = sorted(
        itertools.chain.from_iterable(((s, 1), (e, -1)) for s, e in spans),
        key=lambda x: (x[0], x[1]),
    )
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def four_steps(out, body):
    code = TIMED.replace("{body}", body)
    return [{"name": f"s{i}", "code": code, "args": [str(out)]} for i in range(1, 5)]


def test_max_parallel_two_never_runs_more_than_two(make_pipeline, run_to_end, tmp_path):
    out = tmp_path / "times"
    out.mkdir()
    make_pipeline("p", four_steps(out, MEET), max_parallel=2)
    record = run_to_end("p")
    assert record["state"] == "succeeded" and record["max_parallel"] == 2
    spans = intervals(out, ["s1", "s2", "s3", "s4"]).values()
    assert max_overlap(spans) == 2


def test_max_parallel_one_runs_one_at_a_time(make_pipeline, run_to_end, tmp_path):
    out = tmp_path / "times"
    out.mkdir()
    make_pipeline("p", four_steps(out, "time.sleep(0.05)"))
    run_to_end("p")
    spans = sorted(intervals(out, ["s1", "s2", "s3", "s4"]).values())
    assert max_overlap(spans) == 1
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)


def test_max_parallel_argument_overrides_the_yaml(make_pipeline, run_to_end, tmp_path):
    out = tmp_path / "times"
    out.mkdir()
    make_pipeline("p", four_steps(out, MEET), max_parallel=1)
    record = run_to_end("p", max_parallel=2)
    assert record["max_parallel"] == 2
    assert max_overlap(intervals(out, ["s1", "s2", "s3", "s4"]).values()) == 2


def test_failure_stops_new_steps_and_skips_the_rest(make_pipeline, run_to_end, read_status):
    make_pipeline(
        "p",
        [
            {"name": "a", "code": "raise SystemExit(1)"},
            {"name": "b"},
            {"name": "c", "depends_on": ["a"]},
        ],
    )
    record = run_to_end("p")
    assert record["state"] == "failed"
    status = read_status("p")
    assert status["a"]["state"] == "failed"
    for name in ("b", "c"):
        assert status[name]["state"] == "skipped"
        assert status[name]["skip_reason"] == "not started: step 'a' failed"
        assert status[name]["started_at"] is None  # never started
        assert record["steps"][name]["state"] == "skipped"


# "slow" ends only after "bad" is recorded failed, so it is surely running at that moment.
WAIT_FOR_BAD = """\
status = pathlib.Path("pipelines/.p.status.json")
deadline = time.time() + 10
while time.time() < deadline and '"failed"' not in (status.read_text() if status.exists() else ""):
    time.sleep(0.01)
time.sleep(0.2)
"""


def test_failure_lets_a_running_step_finish_but_starts_no_new_one(
    make_pipeline, run_to_end, read_status, tmp_path
):
    started = tmp_path / "started"
    started.mkdir()
    note = "pathlib.Path(sys.argv[1], os.environ['PIPELINE_STEP']).touch()\n"
    make_pipeline(
        "p",
        [
            {"name": "slow", "code": note + WAIT_FOR_BAD, "args": [str(started)]},
            {"name": "bad", "code": note + "raise SystemExit(2)", "args": [str(started)]},
            {"name": "c", "code": note, "args": [str(started)]},
            {"name": "d", "code": note, "args": [str(started)]},
        ],
        max_parallel=2,
    )
    run_to_end("p")
    status = read_status("p")
    assert status["slow"]["state"] == "succeeded"
    assert status["bad"]["state"] == "failed"
    assert status["c"]["state"] == status["d"]["state"] == "skipped"
    assert sorted(p.name for p in started.iterdir()) == ["bad", "slow"]


CHAIN = [
    {"name": "a", "code": "raise SystemExit(1)"},
    {"name": "b"},
    {"name": "c", "depends_on": ["a"]},
    {"name": "d", "depends_on": ["c"]},
    {"name": "e", "depends_on": ["b"]},
]


def test_continue_on_failure_in_yaml_skips_only_dependents(make_pipeline, run_to_end, read_status):
    make_pipeline("p", CHAIN, continue_on_failure=True)
    record = run_to_end("p")
    assert record["state"] == "failed" and record["continue_on_failure"] is True
    status = read_status("p")
    assert {n: status[n]["state"] for n in "abcde"} == {
        "a": "failed",
        "b": "succeeded",
        "c": "skipped",
        "d": "skipped",
        "e": "succeeded",
    }
    assert status["c"]["skip_reason"] == "upstream failed: a"
    assert status["d"]["skip_reason"] == "upstream failed: a"
    assert record["steps"]["d"]["error"] == "upstream failed: a"


def test_continue_on_failure_argument_overrides_the_yaml(make_pipeline, run_to_end, read_status):
    make_pipeline("p", CHAIN)
    run_to_end("p", continue_on_failure=True)
    assert read_status("p")["e"]["state"] == "succeeded"
    make_pipeline("q", CHAIN, continue_on_failure=True)
    run_to_end("q", continue_on_failure=False)
    assert read_status("q")["e"]["state"] == "skipped"


def test_events_tell_each_start_and_end_with_progress(make_pipeline, engine):
    make_pipeline(
        "p", [{"name": "a", "code": "print('hello')"}, {"name": "b", "depends_on": ["a"]}]
    )
    events = []
    run_id = engine.submit("p", on_event=events.append)
    engine.wait(run_id, timeout=30)
    kinds = [(e.kind, e.step) for e in events if e.kind != "step_output"]
    assert kinds == [
        ("run_started", None),
        ("step_started", "a"),
        ("step_finished", "a"),
        ("step_started", "b"),
        ("step_finished", "b"),
        ("run_finished", None),
    ]
    outputs = [(e.step, e.stream, e.text) for e in events if e.kind == "step_output"]
    assert ("a", "stdout", "hello") in outputs
    finished = [e for e in events if e.kind == "step_finished"]
    assert [(e.done, e.total, e.state) for e in finished] == [
        (1, 2, "succeeded"),
        (2, 2, "succeeded"),
    ]


def test_submit_refuses_a_second_run_of_the_same_pipeline(
    make_pipeline, engine, tmp_path, wait_until
):
    go = tmp_path / "go"
    wait = "deadline = time.time() + 30\nwhile not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:\n    time.sleep(0.02)\n"
    make_pipeline("p", [{"name": "a", "code": wait, "args": [str(go)]}])
    make_pipeline("other", [{"name": "x"}])
    run_id = engine.submit("p")
    with pytest.raises(PipelineBusyError) as err:
        engine.submit("p", Selection("step", "a"))
    assert run_id in str(err.value) and "already running" in str(err.value)
    # Another pipeline is not blocked.
    other = engine.submit("other")
    assert engine.wait(other, timeout=30)["state"] == "succeeded"
    wait_until(lambda: [a.running for a in engine.active_runs()] == [("a",)])
    (active,) = engine.active_runs()
    assert (active.run_id, active.pipeline_id, active.total) == (run_id, "p", 1)
    go.touch()
    assert engine.wait(run_id, timeout=30)["state"] == "succeeded"
    assert engine.active_runs() == []


def test_submit_errors_are_user_errors(make_pipeline, engine):
    make_pipeline("p", [{"name": "a"}])
    with pytest.raises(PipelineNotFoundError, match="no pipeline 'q'"):
        engine.submit("q")
    with pytest.raises(OrchestratorError, match="--max-parallel must be at least 1, got 0"):
        engine.submit("p", max_parallel=0)


@pytest.mark.parametrize("exc", [RuntimeError("sink broke"), SystemExit(0)], ids=["error", "exit"])
def test_an_event_sink_that_raises_disturbs_nothing(make_pipeline, engine, exc):
    """One worker thread runs both steps one after the other: were it lost to the sink's
    exception, the second step would wait for it forever."""
    make_pipeline("p", [{"name": "a"}, {"name": "b"}], max_parallel=1)

    def sink(event):
        if event.kind == "step_finished":
            raise exc

    run_id = engine.submit("p", on_event=sink)
    record = engine.wait(run_id, timeout=30)
    assert record is not None, "the run hung"
    assert record["state"] == "succeeded"
    assert [s["state"] for s in record["steps"].values()] == ["succeeded", "succeeded"]
