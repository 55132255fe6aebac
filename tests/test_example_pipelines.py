"""The pipelines the project ships: they validate as they are, and the two small examples run
from a copy with the CLI, write sensible outputs, and give the same outputs when run again."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parent.parent / "pipelines"

OUTPUTS = {
    "example_pipeline": ("raw_sales.csv", "clean_sales.csv", "summary.json"),
    "my_first_pipeline": ("measurements.csv", "stats.csv", "report.txt"),
}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_shipped_pipelines_folder_validates_as_it_is(cli):
    code, out, err = cli("validate", pipelines_dir_arg=SHIPPED)
    assert code == 0, out + err
    lines = sorted(out.splitlines())
    assert lines == [
        "ok       example_pipeline (3 steps)",
        "ok       mixpanel_pipeline (6 steps)",
        "ok       my_first_pipeline (3 steps)",
    ]


@pytest.fixture
def examples(pipelines_dir: Path) -> Path:
    """The two small examples copied into the tmp project; returns its output folder."""
    for name in OUTPUTS:
        shutil.copytree(SHIPPED / name, pipelines_dir / name)
    return pipelines_dir.parent / "output"


def check_example_pipeline(out: Path) -> None:
    raw = rows(out / "raw_sales.csv")
    clean = rows(out / "clean_sales.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(raw) == 500
    assert 0 < len(clean) < len(raw)  # the rows without an amount are dropped
    assert all(r["amount"] for r in clean)
    assert {r["region"] for r in clean} == {"north", "south", "east", "west"}  # " North " fixed
    assert summary["orders"] == len(clean)
    assert summary["revenue"] == pytest.approx(sum(float(r["amount"]) for r in clean), abs=0.05)
    assert set(summary["by_region"]) == {"north", "south", "east", "west"}
    assert sum(v["count"] for v in summary["by_region"].values()) == len(clean)


def check_my_first_pipeline(out: Path) -> None:
    measurements = rows(out / "measurements.csv")
    stats = {r["sensor"]: r for r in rows(out / "stats.csv")}
    report = (out / "report.txt").read_text().splitlines()
    assert len(measurements) == 90
    assert set(stats) == {"a", "b", "c"}
    for sensor, row in stats.items():
        values = [float(m["value"]) for m in measurements if m["sensor"] == sensor]
        assert int(row["count"]) == len(values) == 30
        assert float(row["mean"]) == pytest.approx(sum(values) / len(values), abs=0.001)
    assert report[0].startswith("Sensor report (")
    assert [line.split(":")[0] for line in report[2:]] == ["sensor a", "sensor b", "sensor c"]


def test_the_examples_run_with_the_cli_and_again_with_the_same_outputs(cli, examples):
    code, out, err = cli("validate")
    assert code == 0, out + err
    assert out.splitlines() == [
        "ok       example_pipeline (3 steps)",
        "ok       my_first_pipeline (3 steps)",
    ]
    first: dict[str, bytes] = {}
    for rnd in (1, 2):
        for pipeline_id, files in OUTPUTS.items():
            code, out, err = cli("run", pipeline_id)
            assert code == 0, out + err
            assert "run succeeded" in out
            folder = examples / pipeline_id
            for name in files:
                data = (folder / name).read_bytes()
                if name == "report.txt":  # its first line carries the date
                    data = data.split(b"\n", 1)[1]
                if rnd == 1:
                    first[f"{pipeline_id}/{name}"] = data
                else:
                    assert data == first[f"{pipeline_id}/{name}"], name
            assert not list(folder.glob("*.tmp"))
    check_example_pipeline(examples / "example_pipeline")
    check_my_first_pipeline(examples / "my_first_pipeline")
    code, out, _ = cli("status", "example_pipeline", "--json")
    assert [s["outdated"] for s in json.loads(out)["steps"]] == [[], [], []]
