"""Discovery: both layouts, ids, hidden entries, clashes, broken pipelines beside good ones,
and edits seen on the next call."""

from __future__ import annotations

import os

import pytest

from orchestrator_core.discovery import discover_pipelines, find_pipeline
from orchestrator_core.errors import PipelineInvalidError, PipelineNotFoundError


def by_id(pipelines_dir):
    return {d.id: d for d in discover_pipelines(pipelines_dir)}


def test_file_layout_yaml_and_yml(pipelines_dir, make_pipeline):
    make_pipeline("alpha", [{"name": "a"}])
    make_pipeline("beta", [{"name": "b"}], suffix=".yml")
    found = by_id(pipelines_dir)
    assert sorted(found) == ["alpha", "beta"]
    alpha = found["alpha"]
    assert alpha.valid and alpha.layout == "file"
    assert alpha.path == pipelines_dir / "alpha.yaml"
    assert alpha.scripts_dir == pipelines_dir / "alpha"
    assert alpha.pipeline.script_path(alpha.pipeline.steps[0]) == pipelines_dir / "alpha" / "a.py"
    assert found["beta"].path == pipelines_dir / "beta.yml" and found["beta"].valid


def test_folder_layout_scripts_beside_the_yaml(pipelines_dir, make_pipeline):
    make_pipeline("gamma", [{"name": "g"}], layout="folder")
    make_pipeline("delta", [{"name": "d"}], layout="folder", suffix=".yml")
    found = by_id(pipelines_dir)
    gamma = found["gamma"]
    assert gamma.valid and gamma.layout == "folder"
    assert gamma.path == pipelines_dir / "gamma" / "pipeline.yaml"
    assert gamma.scripts_dir == pipelines_dir / "gamma"
    assert found["delta"].valid and found["delta"].path.name == "pipeline.yml"


def test_id_is_the_stem_or_folder_name_not_the_yaml_name(pipelines_dir, make_pipeline):
    make_pipeline("by_file", [{"name": "a"}], name="Something Else")
    make_pipeline("by_folder", [{"name": "a"}], layout="folder", name="Another Name")
    found = by_id(pipelines_dir)
    assert sorted(found) == ["by_file", "by_folder"]
    assert found["by_file"].name == "Something Else"
    assert found["by_folder"].pipeline.id == "by_folder"


def test_hidden_files_and_folders_are_skipped(pipelines_dir, make_pipeline):
    make_pipeline("shown", [{"name": "a"}])
    make_pipeline(".hidden", [{"name": "a"}])
    make_pipeline(".secret", [{"name": "a"}], layout="folder")
    (pipelines_dir / "notes.txt").write_text("not a pipeline")
    (pipelines_dir / "empty_folder").mkdir()
    assert list(by_id(pipelines_dir)) == ["shown"]


def test_both_layouts_for_one_id_is_an_error_naming_both_files(pipelines_dir, make_pipeline):
    make_pipeline("twice", [{"name": "a"}])
    make_pipeline("twice", [{"name": "a"}], layout="folder")
    twice = by_id(pipelines_dir)["twice"]
    assert not twice.valid
    (problem,) = twice.problems
    text = str(problem)
    assert "'twice' is defined by more than one file" in text
    assert str(pipelines_dir / "twice.yaml") in text
    assert str(pipelines_dir / "twice" / "pipeline.yaml") in text
    assert text.endswith("keep one of them")


def test_invalid_pipeline_is_listed_and_never_stops_the_others(
    pipelines_dir, make_pipeline, write_yaml, run_to_end
):
    make_pipeline("good", [{"name": "a"}])
    write_yaml("bad", "name: [unclosed\n")
    write_yaml("worse", "- not a mapping\n")
    found = by_id(pipelines_dir)
    assert sorted(found) == ["bad", "good", "worse"]
    assert found["good"].valid
    assert not found["bad"].valid and "YAML syntax" in str(found["bad"].problems[0])
    assert not found["worse"].valid and found["worse"].name == "worse"
    assert run_to_end("good")["state"] == "succeeded"
    with pytest.raises(PipelineInvalidError, match=r"pipeline 'bad' is invalid: .*YAML syntax"):
        run_to_end("bad")


def test_unknown_pipeline_suggests_a_close_id(pipelines_dir, make_pipeline):
    make_pipeline("daily_sales", [{"name": "a"}])
    with pytest.raises(
        PipelineNotFoundError, match=r"no pipeline 'daily_sale' .*did you mean 'daily_sales'\?"
    ):
        find_pipeline(pipelines_dir, "daily_sale")


def test_missing_pipelines_folder_means_no_pipelines(tmp_path):
    assert discover_pipelines(tmp_path / "nowhere") == []


def test_new_and_edited_yaml_seen_on_the_next_call(pipelines_dir, make_pipeline):
    path = make_pipeline("first", [{"name": "a"}], name="AAAA")
    assert list(by_id(pipelines_dir)) == ["first"]
    make_pipeline("second", [{"name": "b"}])
    assert list(by_id(pipelines_dir)) == ["first", "second"]
    # Same size, new content: only the mtime tells the cache; bump it rather than sleep.
    path.write_text(path.read_text().replace("AAAA", "BBBB"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert by_id(pipelines_dir)["first"].name == "BBBB"
    # Breaking it shows up at once too, and fixing it again as well.
    path.write_text("name: broken\n")
    assert not by_id(pipelines_dir)["first"].valid
    make_pipeline("first", [{"name": "a"}, {"name": "b2", "depends_on": ["a"]}])
    assert by_id(pipelines_dir)["first"].pipeline.step_names == ["a", "b2"]


def test_script_deleted_or_added_is_seen_without_touching_the_yaml(pipelines_dir, make_pipeline):
    make_pipeline("p", [{"name": "a"}])
    assert by_id(pipelines_dir)["p"].valid
    script = pipelines_dir / "p" / "a.py"
    script.unlink()
    problems = by_id(pipelines_dir)["p"].problems
    assert "'a.py' not found" in str(problems[0])
    script.write_text("print('back')\n")
    assert by_id(pipelines_dir)["p"].valid
