"""Every validation rule of a pipeline file, asserted as the line a user reads:
`<file>: <where> (line N): <message>`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator_core.discovery import discover_pipelines

STEP_A = "steps:\n  - name: a\n    script: a.py\n    description: first\n"


def problems_of(pipelines_dir: Path, pipeline_id: str) -> list[str]:
    found = {d.id: d for d in discover_pipelines(pipelines_dir)}
    assert not found[pipeline_id].valid
    return [str(p) for p in found[pipeline_id].problems]


def with_top(extra: str) -> str:
    """A valid file with `extra` top-level lines from line 3 on."""
    return "name: demo\ndescription: a demo\n" + extra + STEP_A


def with_step(extra: str) -> str:
    """A valid file whose step 'a' gets `extra` keys from line 7 on."""
    return "name: demo\ndescription: a demo\n" + STEP_A + extra


def test_valid_file_gives_a_frozen_model(pipelines_dir, write_yaml):
    write_yaml(
        "demo",
        """\
        name: Demo
        description: a demo
        continue_on_failure: true
        max_parallel: 3
        steps:
          - name: a
            script: a.py
            description: first
            timeout: 5
            retries: 2
            retry_delay: 0.5
            env: {MODE: fast}
            args: ["--x", "1"]
          - name: b
            script: sub/b.py
            description: second
            depends_on: [a]
        """,
        scripts=("a.py",),
    )
    (pipelines_dir / "demo" / "sub").mkdir()
    (pipelines_dir / "demo" / "sub" / "b.py").write_text("print(1)\n")
    (found,) = discover_pipelines(pipelines_dir)
    assert found.valid, found.problems
    p = found.pipeline
    assert (p.id, p.name, p.description) == ("demo", "Demo", "a demo")
    assert p.continue_on_failure is True and p.max_parallel == 3
    a, b = p.steps
    assert a.timeout == 5.0 and a.retries == 2 and a.retry_delay == 0.5
    assert a.env == {"MODE": "fast"} and a.args == ("--x", "1")
    assert b.depends_on == ("a",)
    assert p.script_path(b) == pipelines_dir / "demo" / "sub" / "b.py"
    with pytest.raises(AttributeError):
        p.name = "other"  # frozen


def test_yaml_syntax_error_names_the_line(pipelines_dir, write_yaml):
    path = write_yaml("demo", "name: demo\ndescription: a: b\n" + STEP_A)
    (msg,) = problems_of(pipelines_dir, "demo")
    assert msg.startswith(
        f"{path}: YAML syntax, column 15 (line 2): mapping values are not allowed"
    )
    assert msg.endswith("; fix the YAML")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just some words\n", "a string"), ("42\n", "a number")],
)
def test_document_that_is_not_a_mapping(pipelines_dir, write_yaml, text, kind):
    path = write_yaml("demo", text)
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: top level (line 1): must be a mapping with the keys name, description "
        f"and steps, not {kind}"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(pipelines_dir, write_yaml, text):
    path = write_yaml("demo", text)
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: file: is empty; it needs the keys name, description and steps"
    ]


@pytest.mark.parametrize("key", ["name", "description", "steps"])
def test_missing_required_top_level_key(pipelines_dir, write_yaml, key):
    lines = {"name": "name: demo\n", "description": "description: d\n", "steps": STEP_A}
    text = "".join(v for k, v in lines.items() if k != key)
    path = write_yaml("demo", text, scripts=("a.py",))
    assert f"{path}: top level (line 1): missing required key '{key}'" in problems_of(
        pipelines_dir, "demo"
    )


@pytest.mark.parametrize(
    ("key", "where"), [("name", "step #1"), ("script", "step 'a'"), ("description", "step 'a'")]
)
def test_missing_required_step_key(pipelines_dir, write_yaml, key, where):
    step = {
        "name": "    name: a\n",
        "script": "    script: a.py\n",
        "description": "    description: x\n",
    }
    body = "".join(v for k, v in step.items() if k != key)
    text = "name: demo\ndescription: d\nsteps:\n  -" + body[3:]
    path = write_yaml("demo", text, scripts=("a.py",))
    assert f"{path}: {where} (line 4): missing required key '{key}'" in problems_of(
        pipelines_dir, "demo"
    )


TOP_LEVEL_TYPES = [
    (
        "name: 5\ndescription: d\n" + STEP_A,
        "top level: name (line 1)",
        "must be a non-empty string, not a number",
    ),
    (
        'name: ""\ndescription: d\n' + STEP_A,
        "top level: name (line 1)",
        "must be a non-empty string, not an empty string",
    ),
    (
        "name: n\ndescription: [x]\n" + STEP_A,
        "top level: description (line 2)",
        "must be a string, not a list",
    ),
    (
        "name: n\ndescription: d\nsteps: {a: 1}\n",
        "top level: steps (line 3)",
        "must be a non-empty list of steps, not a mapping",
    ),
    (
        "name: n\ndescription: d\nsteps: []\n",
        "top level: steps (line 3)",
        "must be a non-empty list of steps, not an empty list",
    ),
    (
        "name: n\ndescription: d\nsteps: run.py\n",
        "top level: steps (line 3)",
        "must be a non-empty list of steps, not a string",
    ),
    (
        with_top("continue_on_failure: maybe\n"),
        "top level: continue_on_failure (line 3)",
        "must be true or false, not a string",
    ),
    (
        with_top("continue_on_failure: 1\n"),
        "top level: continue_on_failure (line 3)",
        "must be true or false, not a number",
    ),
    (with_top("max_parallel: 0\n"), "top level: max_parallel (line 3)", "must be >= 1, got 0"),
    (with_top("max_parallel: -2\n"), "top level: max_parallel (line 3)", "must be >= 1, got -2"),
    (
        with_top("max_parallel: 1.5\n"),
        "top level: max_parallel (line 3)",
        "must be a whole number, not a decimal number",
    ),
    (
        with_top('max_parallel: "2"\n'),
        "top level: max_parallel (line 3)",
        "must be a whole number, not a string",
    ),
    (
        with_top("max_parallel: true\n"),
        "top level: max_parallel (line 3)",
        "must be a whole number, not a boolean",
    ),
]

STEP_TYPES = [
    ("timeout: 0\n", "timeout (line 7)", "must be greater than 0, got 0"),
    ("timeout: -3\n", "timeout (line 7)", "must be greater than 0, got -3"),
    ("timeout: 10s\n", "timeout (line 7)", "must be a number of seconds, not a string"),
    ("retries: -1\n", "retries (line 7)", "must be >= 0, got -1"),
    ("retries: 1.5\n", "retries (line 7)", "must be a whole number, not a decimal number"),
    ("retries: yes\n", "retries (line 7)", "must be a whole number, not a boolean"),
    ("retry_delay: -0.5\n", "retry_delay (line 7)", "must be >= 0, got -0.5"),
    ("retry_delay: soon\n", "retry_delay (line 7)", "must be a number of seconds, not a string"),
    ("env: [A=1]\n", "env (line 7)", "must be a mapping of names to strings, not a list"),
    (
        "env:\n      1: x\n",
        "env (line 8)",
        "variable name 1 must be a non-empty string without '=' or NUL",
    ),
    ("env:\n      A: x\n      B: 1\n", "env.B (line 9)", 'must be a string; quote it as "1"'),
    ("args: --fast\n", "args (line 7)", 'must be a list of strings, e.g. ["a", "b"], not a string'),
    ("args: [--n, 3]\n", "args (line 7)", 'every item must be a string; quote 3 as "3"'),
    (
        "depends_on: a\n",
        "depends_on (line 7)",
        'must be a list of strings, e.g. ["a", "b"], not a string',
    ),
    ("depends_on: [1]\n", "depends_on (line 7)", 'every item must be a string; quote 1 as "1"'),
]


@pytest.mark.parametrize(("text", "where", "message"), TOP_LEVEL_TYPES)
def test_wrong_type_top_level(pipelines_dir, write_yaml, text, where, message):
    path = write_yaml("demo", text, scripts=("a.py",))
    assert f"{path}: {where}: {message}" in problems_of(pipelines_dir, "demo")


@pytest.mark.parametrize(("extra", "where", "message"), STEP_TYPES)
def test_wrong_type_step_keys(pipelines_dir, write_yaml, extra, where, message):
    path = write_yaml("demo", with_step("    " + extra), scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [f"{path}: step 'a': {where}: {message}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: d\ndescription: d\nsteps:\n  - name: 5\n    script: a.py\n    description: x\n",
            "step #1: name (line 4): must be a non-empty string, not a number",
        ),
        (
            "name: d\ndescription: d\nsteps:\n  - name: a\n    script: [a.py]\n    description: x\n",
            "step 'a': script (line 5): must be a non-empty string, not a list",
        ),
        (
            "name: d\ndescription: d\nsteps:\n  - name: a\n    script: a.py\n    description: {x: 1}\n",
            "step 'a': description (line 6): must be a string, not a mapping",
        ),
        (
            STEP_A.join(["name: d\ndescription: d\n", ""]) + "  - just a string\n",
            "step #2 (line 3): must be a mapping with name, script and description, not a string",
        ),
    ],
)
def test_wrong_type_step_basics(pipelines_dir, write_yaml, text, message):
    path = write_yaml("demo", text, scripts=("a.py",))
    assert f"{path}: {message}" in problems_of(pipelines_dir, "demo")


def test_unknown_keys_suggest_the_close_one(pipelines_dir, write_yaml):
    text = (
        "name: demo\ndescription: d\nmax_paralel: 2\n"
        + STEP_A
        + "    depend_on: [a]\n    colour: blue\n"
    )
    path = write_yaml("demo", text, scripts=("a.py",))
    msgs = problems_of(pipelines_dir, "demo")
    assert (
        f"{path}: top level (line 3): unknown key 'max_paralel'; did you mean 'max_parallel'?"
        in msgs
    )
    assert f"{path}: step 'a' (line 8): unknown key 'depend_on'; did you mean 'depends_on'?" in msgs
    assert (
        f"{path}: step 'a' (line 9): unknown key 'colour'; allowed keys: name, script, "
        "description, depends_on, timeout, retries, retry_delay, env, args"
    ) in msgs


def test_key_given_twice(pipelines_dir, write_yaml):
    path = write_yaml("demo", "name: a\ndescription: d\nname: b\n" + STEP_A, scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: top level (line 3): key 'name' is given twice (also on line 1); keep one"
    ]


def test_duplicate_step_names(pipelines_dir, write_yaml):
    text = with_step("  - name: a\n    script: a.py\n    description: again\n")
    path = write_yaml("demo", text, scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: step 'a' (line 7): duplicate step name 'a' (first defined on line 4); "
        "step names must be unique"
    ]


def test_depends_on_a_missing_step_suggests_a_close_match(pipelines_dir, write_yaml):
    text = with_step(
        "  - name: load_data\n    script: a.py\n    description: x\n"
        "  - name: report\n    script: a.py\n    description: x\n    depends_on: [load_dta, nothing_like_it]\n"
    )
    path = write_yaml("demo", text, scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: step 'report': depends_on (line 13): unknown step 'load_dta'; did you mean 'load_data'?",
        f"{path}: step 'report': depends_on (line 13): unknown step 'nothing_like_it'",
    ]


def test_depends_on_with_other_letter_case_notes_names_are_case_sensitive(
    pipelines_dir, write_yaml
):
    text = with_step("  - name: b\n    script: a.py\n    description: x\n    depends_on: [A]\n")
    path = write_yaml("demo", text, scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: step 'b': depends_on (line 10): unknown step 'A'; did you mean 'a'? "
        "(names are case-sensitive)"
    ]


def test_step_depending_on_itself(pipelines_dir, write_yaml):
    path = write_yaml("demo", with_step("    depends_on: [a]\n"), scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: step 'a': depends_on (line 7): step 'a' depends on itself; remove it from depends_on"
    ]


def test_cycle_is_printed_as_its_path(pipelines_dir, write_yaml):
    text = "name: d\ndescription: d\nsteps:\n"
    for name, dep in (("a", "b"), ("b", "c"), ("c", "a")):
        text += f"  - name: {name}\n    script: a.py\n    description: x\n    depends_on: [{dep}]\n"
    path = write_yaml("demo", text, scripts=("a.py",))
    assert problems_of(pipelines_dir, "demo") == [
        f"{path}: step 'a': depends_on (line 7): dependency cycle a -> b -> c -> a; "
        "remove one of these dependencies"
    ]


def script_problem(pipelines_dir: Path, write_yaml, script: str) -> str:
    text = (
        f"name: d\ndescription: d\nsteps:\n  - name: a\n    script: {script}\n    description: x\n"
    )
    path = write_yaml("demo", text)
    (msg,) = problems_of(pipelines_dir, "demo")
    prefix = f"{path}: step 'a': script (line 5): "
    assert msg.startswith(prefix), msg
    return msg[len(prefix) :]


def test_script_missing(pipelines_dir, write_yaml):
    assert script_problem(pipelines_dir, write_yaml, "nope.py") == (
        f"'nope.py' not found at {pipelines_dir / 'demo' / 'nope.py'}; create it or fix the name"
    )


def test_script_not_a_python_file(pipelines_dir, write_yaml):
    (pipelines_dir / "demo").mkdir()
    (pipelines_dir / "demo" / "run.sh").write_text("echo hi\n")
    assert script_problem(pipelines_dir, write_yaml, "run.sh") == (
        "'run.sh' is not a Python file; it must end in .py"
    )


def test_script_absolute(pipelines_dir, write_yaml, tmp_path):
    outside = tmp_path / "abs.py"
    outside.write_text("print(1)\n")
    assert script_problem(pipelines_dir, write_yaml, str(outside)) == (
        f"'{outside}' is absolute; give a path inside {pipelines_dir / 'demo'}/"
    )


def test_script_outside_the_scripts_folder(pipelines_dir, write_yaml):
    (pipelines_dir / "elsewhere.py").write_text("print(1)\n")
    assert script_problem(pipelines_dir, write_yaml, "../elsewhere.py") == (
        f"'../elsewhere.py' resolves outside the scripts folder {pipelines_dir / 'demo'}/; "
        "keep scripts inside it"
    )


def test_script_symlink_pointing_outside(pipelines_dir, write_yaml, tmp_path):
    (tmp_path / "secret.py").write_text("print(1)\n")
    (pipelines_dir / "demo").mkdir()
    os.symlink(tmp_path / "secret.py", pipelines_dir / "demo" / "link.py")
    assert "resolves outside the scripts folder" in script_problem(
        pipelines_dir, write_yaml, "link.py"
    )


def test_script_symlink_inside_the_folder_is_fine(pipelines_dir, write_yaml):
    (pipelines_dir / "demo" / "lib").mkdir(parents=True)
    (pipelines_dir / "demo" / "lib" / "real.py").write_text("print(1)\n")
    os.symlink(pipelines_dir / "demo" / "lib" / "real.py", pipelines_dir / "demo" / "link.py")
    write_yaml(
        "demo",
        "name: d\ndescription: d\nsteps:\n  - name: a\n    script: link.py\n    description: x\n",
    )
    (found,) = discover_pipelines(pipelines_dir)
    assert found.valid, found.problems


def test_every_problem_of_a_file_is_reported_at_once(pipelines_dir, write_yaml):
    text = """\
    name: demo
    descripton: typo
    max_parallel: 0
    steps:
      - name: a
        script: a.py
        description: x
        timeout: -1
        retries: many
      - name: b
        script: missing.py
        description: x
        depends_on: [c, zzz]
      - name: c
        script: b.txt
        description: x
        depends_on: [b]
      - name: a
        script: a.py
        description: dup
    """
    path = write_yaml("demo", text, scripts=("a.py",))
    msgs = problems_of(pipelines_dir, "demo")
    expected = [
        "top level (line 1): missing required key 'description'",
        "top level (line 2): unknown key 'descripton'; did you mean 'description'?",
        "top level: max_parallel (line 3): must be >= 1, got 0",
        "step 'a': timeout (line 8): must be greater than 0, got -1",
        "step 'a': retries (line 9): must be a whole number, not a string",
        "step 'b': script (line 11): 'missing.py' not found",
        "step 'c': script (line 15): 'b.txt' is not a Python file",
        "step 'a' (line 18): duplicate step name 'a' (first defined on line 5)",
        "step 'b': depends_on (line 13): unknown step 'zzz'",
        "step 'b': depends_on (line 13): dependency cycle b -> c -> b",
    ]
    for fragment in expected:
        assert any(m.startswith(f"{path}: {fragment}") for m in msgs), (fragment, msgs)
    assert len(msgs) == len(expected), msgs
