"""The DAG (order, waves, cycles) and plans: whole pipeline, one step, from, to, outdated."""

from __future__ import annotations

import pytest

from orchestrator_core import dag
from orchestrator_core.engine import NothingToRunError
from orchestrator_core.errors import SelectionError
from orchestrator_core.plan import Selection

# load -> (clean, enrich) -> report ; audit is independent
DIAMOND = [
    {"name": "load"},
    {"name": "clean", "depends_on": ["load"]},
    {"name": "enrich", "depends_on": ["load"]},
    {"name": "report", "depends_on": ["clean", "enrich"]},
    {"name": "audit"},
]


def test_waves_and_order_follow_dependencies_then_file_order():
    graph = {s["name"]: tuple(s.get("depends_on", ())) for s in DIAMOND}
    assert dag.waves(graph) == [["load", "audit"], ["clean", "enrich"], ["report"]]
    assert dag.topo_order(graph) == ["load", "audit", "clean", "enrich", "report"]
    assert dag.upstream(graph, "report") == {"load", "clean", "enrich"}
    assert dag.downstream(graph, "load") == {"clean", "enrich", "report"}
    assert dag.find_cycle(graph) is None


def test_find_cycle_returns_the_path():
    assert dag.find_cycle({"a": ("b",), "b": ("c",), "c": ("a",)}) == ["a", "b", "c", "a"]
    assert dag.find_cycle({"x": (), "a": ("a",)}) == ["a", "a"]


@pytest.fixture
def diamond(make_pipeline):
    make_pipeline("d", DIAMOND)
    return "d"


def test_plan_whole_pipeline(engine, diamond):
    plan = engine.plan(diamond)
    assert plan.waves == (("load", "audit"), ("clean", "enrich"), ("report",))
    assert plan.steps == ("load", "audit", "clean", "enrich", "report")
    assert set(plan.reasons.values()) == {"whole pipeline"}
    assert plan.skipped == {} and plan.warnings == ()


def test_plan_one_step_does_not_run_its_dependencies_and_warns(engine, diamond, run_to_end):
    plan = engine.plan(diamond, Selection("step", "clean"))
    assert plan.steps == ("clean",)
    assert plan.reasons == {"clean": "selected step"}
    assert plan.skipped["load"] == "not selected"
    assert plan.warnings == (
        "step 'clean' depends on 'load', which is not in this run and is never_run; "
        "its input may be missing",
    )
    run_to_end(diamond, Selection("step", "load"))
    assert engine.plan(diamond, Selection("step", "clean")).warnings == ()


def test_plan_from_a_step_runs_it_and_downstream(engine, diamond):
    plan = engine.plan(diamond, Selection("from", "clean"))
    assert plan.waves == (("clean",), ("report",))
    assert plan.reasons == {"clean": "selected step", "report": "downstream of clean"}
    # report also needs enrich, which is not in the run and has not succeeded.
    assert any("'report' depends on 'enrich'" in w for w in plan.warnings)


def test_plan_to_a_step_runs_it_and_upstream(engine, diamond):
    plan = engine.plan(diamond, Selection("to", "report"))
    assert plan.waves == (("load",), ("clean", "enrich"), ("report",))
    assert plan.reasons["load"] == "upstream of report"
    assert plan.skipped == {"audit": "not selected"}


@pytest.mark.parametrize("kind", ["step", "from", "to"])
def test_unknown_step_in_a_selection_suggests_the_close_one(engine, diamond, kind):
    with pytest.raises(SelectionError) as err:
        engine.plan(diamond, Selection(kind, "reprot"))
    assert str(err.value) == (
        "pipeline 'd' has no step 'reprot'; did you mean 'report'? "
        "(steps: load, clean, enrich, report, audit)"
    )


def test_selection_needs_exactly_one_step_name():
    with pytest.raises(SelectionError, match="needs exactly one step name"):
        Selection("step")
    with pytest.raises(SelectionError, match="unknown selection 'some'"):
        Selection("some")


def test_outdated_before_any_run_is_everything(engine, diamond):
    plan = engine.plan(diamond, Selection("outdated"))
    assert set(plan.steps) == {"load", "clean", "enrich", "report", "audit"}
    assert plan.reasons["load"] == "outdated: never succeeded"


def test_outdated_after_a_clean_run_is_nothing(engine, diamond, run_to_end):
    run_to_end(diamond)
    plan = engine.plan(diamond, Selection("outdated"))
    assert plan.steps == ()
    assert set(plan.skipped.values()) == {"up to date"}
    with pytest.raises(NothingToRunError, match="every step is up to date"):
        engine.submit(diamond, Selection("outdated"))


def test_outdated_script_changed_selects_it_and_its_dependents(
    engine, diamond, run_to_end, pipelines_dir
):
    run_to_end(diamond)
    (pipelines_dir / "d" / "enrich.py").write_text("print('a new version of enrich')\n")
    plan = engine.plan(diamond, Selection("outdated"))
    assert plan.steps == ("enrich", "report")
    assert plan.reasons == {
        "enrich": "outdated: script changed since its last success",
        "report": "depends on an outdated step",
    }
    record = run_to_end(diamond, Selection("outdated"))
    assert list(record["steps"]) == ["enrich", "report"]
    assert engine.plan(diamond, Selection("outdated")).steps == ()


@pytest.mark.parametrize("change", [{"args": ["--fast"]}, {"env": {"MODE": "x"}}, {"timeout": 30}])
def test_outdated_when_args_env_or_timeout_changed(engine, make_pipeline, run_to_end, change):
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}, {"name": "c"}])
    run_to_end("p")
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"], **change}, {"name": "c"}])
    plan = engine.plan("p", Selection("outdated"))
    assert plan.steps == ("b",)
    assert plan.reasons["b"] == "outdated: args/env/timeout changed since its last success"


def test_outdated_when_upstream_succeeded_after_it(engine, diamond, run_to_end):
    run_to_end(diamond)
    run_to_end(diamond, Selection("step", "load"))
    plan = engine.plan(diamond, Selection("outdated"))
    assert plan.steps == ("clean", "enrich", "report")
    assert plan.reasons["clean"] == "outdated: upstream step 'load' succeeded after it"
    assert plan.reasons["report"] == "depends on an outdated step"


def test_outdated_after_a_failure(engine, make_pipeline, run_to_end, pipelines_dir):
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])
    run_to_end("p")
    (pipelines_dir / "p" / "b.py").write_text("raise SystemExit(3)\n")
    record = run_to_end("p", Selection("step", "b"))
    assert record["steps"]["b"]["state"] == "failed"
    reasons = engine.plan("p", Selection("outdated")).reasons
    assert reasons == {
        "b": "outdated: script changed since its last success; last run failed",
    }
