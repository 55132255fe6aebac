"""The overview page: counts, invalid pipelines, running now, failures and the last runs."""

from __future__ import annotations

from pathlib import Path

from ui_helpers import chain, engine, page, texts, wait_until, write_pipeline

from orchestrator_core.plan import Selection


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_counts_invalid_pipelines_failures_and_recent_runs(pdir: Path) -> None:
    write_pipeline(pdir, "good", chain("a"))
    write_pipeline(pdir, "bad", chain("x", x='print("disk full", file=sys.stderr)\nreturn 1'))
    (pdir / "broken.yaml").write_text("name: [\n")
    for pid in ("good", "bad"):
        run_id = engine().submit(pid, Selection())
        assert engine().wait(run_id, 30) is not None
    at = page("overview")
    assert not at.exception
    assert metrics(at) == {
        "Pipelines": "3",
        "Invalid": "1",
        "Running now": "0",
        "Failed (last 50 runs)": "1",
    }
    shown = texts(at)
    assert "broken.yaml" in shown
    assert "disk full" in shown
    assert "Nothing is running." in shown
    targets = [link.proto.page for link in at.get("page_link")]
    assert any(t.endswith("pipelines") for t in targets)
    assert any(t.endswith("runs") for t in targets)
    assert len([t for t in targets if t.endswith("runs")]) == 1 + 2  # one failure + 2 recent


def test_running_now_shows_progress(pdir: Path) -> None:
    write_pipeline(pdir, "slow", chain("nap", "after", nap="time.sleep(60)"))
    engine().submit("slow", Selection())
    at = page("overview")

    def shows_running() -> bool:
        at.run()
        return metrics(at)["Running now"] == "1" and bool(at.get("progress"))

    wait_until(shows_running, 30, every=0.2)
    assert "0 of 2 steps done" in at.get("progress")[0].proto.text


def test_empty_folder_explains_what_to_do(pdir: Path) -> None:
    at = page("overview")
    assert not at.exception
    assert "No pipelines in" in at.info[0].value


def test_a_running_pipeline_whose_file_broke_is_shown_once(pdir: Path) -> None:
    """Its run goes on after the YAML broke; the page counts it once, draws every section
    and does not rerun itself for ever (AppTest would time out)."""
    folder = write_pipeline(pdir, "slow", chain("nap", nap="time.sleep(60)"))
    run_id = engine().submit("slow", Selection())
    with open(folder / "pipeline.yaml", "a") as fh:
        fh.write("oops: [\n")
    try:
        at = page("overview")
        assert not at.exception
        assert metrics(at)["Running now"] == "1"
        assert "its pipeline file is invalid now" in texts(at)
        assert {"Latest failures", "Last 10 runs"} <= {h.value for h in at.subheader}
    finally:
        engine().cancel(run_id)
        engine().wait(run_id, 30)
