"""Pipeline YAML -> frozen models, with every problem of a file collected at once.

A problem names the file, where in it (with the YAML line when known) and what to do.
This module reads only the file it is given and stats the scripts it names; it runs nothing.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .dag import find_cycle

PIPELINE_KEYS = ("name", "description", "steps", "continue_on_failure", "max_parallel")
REQUIRED_PIPELINE_KEYS = ("name", "description", "steps")
STEP_KEYS = (
    "name",
    "script",
    "description",
    "depends_on",
    "timeout",
    "retries",
    "retry_delay",
    "env",
    "args",
)
REQUIRED_STEP_KEYS = ("name", "script", "description")


@dataclass(frozen=True)
class Problem:
    """One validation problem: `<file>: <where> (line N): <message>`."""

    file: str
    where: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.where} (line {self.line})" if self.line else self.where
        return f"{self.file}: {where}: {self.message}"


@dataclass(frozen=True)
class Step:
    """One step of a pipeline, as validated from YAML."""

    name: str
    script: str
    description: str
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    env: dict[str, str] = field(default_factory=dict, hash=False)
    args: tuple[str, ...] = ()
    line: int | None = field(default=None, compare=False)

    def config_sha256(self) -> str:
        """A fingerprint of what changes a run besides the script: args, env and timeout."""
        blob = json.dumps(
            {"args": list(self.args), "env": self.env, "timeout": self.timeout}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Pipeline:
    """A valid pipeline: its id, its steps in file order and where its scripts live."""

    id: str
    name: str
    description: str
    steps: tuple[Step, ...]
    source: Path
    scripts_dir: Path
    continue_on_failure: bool = False
    max_parallel: int = 1

    @property
    def step_names(self) -> list[str]:
        """Step names in file order."""
        return [s.name for s in self.steps]

    @functools.cached_property
    def _by_name(self) -> dict[str, Step]:
        return {s.name: s for s in self.steps}

    def step(self, name: str) -> Step:
        """The step called `name` (KeyError if there is none)."""
        return self._by_name[name]

    def script_path(self, step: Step) -> Path:
        """The absolute path of a step's script."""
        return self.scripts_dir / step.script

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Step name -> the names it depends on."""
        return {s.name: s.depends_on for s in self.steps}


@dataclass(frozen=True)
class ParseResult:
    """What parsing one file gave: the pipeline when valid, and every problem found."""

    pipeline: Pipeline | None
    problems: tuple[Problem, ...]
    title: str | None = None
    description: str | None = None


class _LineDict(dict):
    """A dict that remembers the YAML line of itself and of each key."""

    line: int | None = None
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader (C speed when available) whose mappings keep their line numbers."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    out.duplicates = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in out:
            out.duplicates.append((key, out.key_lines[key], line))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for a close match, noting when only the letter case differs."""
    choices = list(choices)
    for c in choices:
        if c.lower() == word.lower() and c != word:
            return f"; did you mean '{c}'? (names are case-sensitive)"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "a number",
        # "a number" would read oddly after "must be a whole number, not ...".
        float: "a decimal number",
        str: "a string",
        list: "a list",
    }.get(type(value), "a mapping" if isinstance(value, dict) else type(value).__name__)


class _Collector:
    """Gathers problems for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, where, message, line))


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Document:
    """A pipeline file read and parsed as YAML (or the problems that stopped it)."""

    file: str
    doc: _LineDict | None
    problems: tuple[Problem, ...]


def load_document(path: Path) -> Document:
    """Read and parse one pipeline file as YAML; never raises for a problem in the file."""
    col = _Collector(display_path(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        col.add("file", f"cannot be read ({exc}); check its permissions and encoding (UTF-8)")
        return Document(col.file, None, tuple(col.problems))
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        # Where the trouble began (an unclosed quote, say), when the parser noticed it later.
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and mark is not None and start.line != mark.line:
            problem = f"{problem}, {context} that starts on line {start.line + 1}"
        where = f"YAML syntax, column {mark.column + 1}" if mark else "YAML syntax"
        col.add(where, f"{problem}; fix the YAML", mark.line + 1 if mark else None)
        return Document(col.file, None, tuple(col.problems))
    if doc is None:
        col.add("file", "is empty; it needs the keys name, description and steps")
    elif not isinstance(doc, dict):
        col.add(
            "top level",
            f"must be a mapping with the keys name, description and steps, not {_type_name(doc)}",
            1,
        )
    if col.problems:
        return Document(col.file, None, tuple(col.problems))
    return Document(col.file, doc, ())


def validate_document(
    document: Document, pipeline_id: str, path: Path, scripts_dir: Path
) -> ParseResult:
    """Check a parsed file against the format and the scripts on disk (which may change
    without the YAML changing, so this runs on every discovery)."""
    if document.doc is None:
        return ParseResult(None, document.problems)
    return _validate(document.doc, _Collector(document.file), pipeline_id, path, scripts_dir)


def parse_pipeline_file(path: Path, pipeline_id: str, scripts_dir: Path) -> ParseResult:
    """Read and validate one pipeline file; never raises for a problem in the file."""
    return validate_document(load_document(path), pipeline_id, path, scripts_dir)


def _check_keys(
    col: _Collector, where: str, doc: _LineDict, allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    for key, first, again in doc.duplicates:
        col.add(where, f"key '{key}' is given twice (also on line {first}); keep one", again)
    for key in required:
        if key not in doc:
            col.add(where, f"missing required key '{key}'", doc.line)
    for key in doc:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            if not hint:
                hint = "; allowed keys: " + ", ".join(allowed)
            col.add(where, f"unknown key '{key}'{hint}", doc.key_lines.get(key))


def _string(col: _Collector, where: str, doc: _LineDict, key: str, *, empty: bool = False) -> Any:
    value = doc.get(key)
    if key in doc and (not isinstance(value, str) or (not empty and not value.strip())):
        kind = "an empty string" if isinstance(value, str) else _type_name(value)
        wanted = "a string" if empty else "a non-empty string"
        col.add(f"{where}: {key}", f"must be {wanted}, not {kind}", doc.key_lines.get(key))
        return None
    if isinstance(value, str) and (
        "\0" in value or (not value.isprintable() and key != "description")
    ):
        col.add(
            f"{where}: {key}",
            f"may not contain NUL or other control characters ({value!r})",
            doc.key_lines.get(key),
        )
        return None
    return value


def _number(
    col: _Collector, where: str, doc: _LineDict, key: str, *, integer: bool, minimum: float
) -> Any:
    if key not in doc:
        return None
    value = doc[key]
    kinds = (int,) if integer else (int, float)
    what = "a whole number" if integer else "a number of seconds"
    if isinstance(value, bool) or not isinstance(value, kinds):
        col.add(f"{where}: {key}", f"must be {what}, not {_type_name(value)}", doc.key_lines[key])
        return None
    if isinstance(value, float) and not math.isfinite(value):
        col.add(f"{where}: {key}", f"must be a finite number, got {value}", doc.key_lines[key])
        return None
    if value < minimum or (key == "timeout" and value <= 0):
        bound = "greater than 0" if key == "timeout" else f">= {minimum:g}"
        col.add(f"{where}: {key}", f"must be {bound}, got {value}", doc.key_lines[key])
        return None
    return value


def _string_list(col: _Collector, where: str, doc: _LineDict, key: str) -> tuple[str, ...] | None:
    if key not in doc:
        return ()
    value = doc[key]
    line = doc.key_lines[key]
    if not isinstance(value, list):
        col.add(
            f"{where}: {key}",
            f'must be a list of strings, e.g. ["a", "b"], not {_type_name(value)}',
            line,
        )
        return None
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        col.add(
            f"{where}: {key}",
            f'every item must be a string; quote {bad[0]!r} as "{bad[0]}"',
            line,
        )
        return None
    if any("\0" in v for v in value):
        col.add(f"{where}: {key}", "items may not contain NUL characters", line)
        return None
    return tuple(value)


def _string_map(col: _Collector, where: str, doc: _LineDict, key: str) -> dict[str, str] | None:
    if key not in doc:
        return {}
    value = doc[key]
    line = doc.key_lines[key]
    if not isinstance(value, dict):
        col.add(
            f"{where}: {key}",
            f"must be a mapping of names to strings, not {_type_name(value)}",
            line,
        )
        return None
    out: dict[str, str] = {}
    for k, v in value.items():
        vline = value.key_lines.get(k, line) if isinstance(value, _LineDict) else line
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            col.add(
                f"{where}: {key}",
                f"variable name {k!r} must be a non-empty string without '=' or NUL",
                vline,
            )
        elif isinstance(v, str) and "\0" in v:
            col.add(f"{where}: {key}.{k}", "may not contain NUL characters", vline)
        elif not isinstance(v, str):
            col.add(f"{where}: {key}.{k}", f'must be a string; quote it as "{v}"', vline)
        else:
            out[k] = v
    return out if len(out) == len(value) else None


def _check_script(
    col: _Collector, where: str, line: int | None, script: str, scripts_dir: Path
) -> None:
    label = f"{where}: script"
    if Path(script).is_absolute():
        col.add(
            label, f"'{script}' is absolute; give a path inside {display_path(scripts_dir)}/", line
        )
        return
    if not script.endswith(".py"):
        col.add(label, f"'{script}' is not a Python file; it must end in .py", line)
        return
    target = scripts_dir / script
    # os.path on strings: pathlib's resolve() costs several times more, per step
    base = os.path.realpath(scripts_dir)
    resolved = os.path.realpath(os.path.join(scripts_dir, script))
    if not resolved.startswith(base.rstrip(os.sep) + os.sep):
        col.add(
            label,
            f"'{script}' resolves outside the scripts folder {display_path(scripts_dir)}/; "
            "keep scripts inside it",
            line,
        )
        return
    if not os.path.isfile(resolved):
        col.add(
            label,
            f"'{script}' not found at {display_path(target)}; create it or fix the name",
            line,
        )


def _validate(
    doc: _LineDict, col: _Collector, pipeline_id: str, path: Path, scripts_dir: Path
) -> ParseResult:
    _check_keys(col, "top level", doc, PIPELINE_KEYS, REQUIRED_PIPELINE_KEYS)
    name = _string(col, "top level", doc, "name")
    description = _string(col, "top level", doc, "description", empty=True)
    continue_on_failure = doc.get("continue_on_failure", False)
    if not isinstance(continue_on_failure, bool):
        col.add(
            "top level: continue_on_failure",
            f"must be true or false, not {_type_name(continue_on_failure)}",
            doc.key_lines.get("continue_on_failure"),
        )
    max_parallel = _number(col, "top level", doc, "max_parallel", integer=True, minimum=1)

    steps: list[Step] = []
    raw_steps = doc.get("steps")
    if "steps" in doc and (not isinstance(raw_steps, list) or not raw_steps):
        kind = "an empty list" if raw_steps == [] else _type_name(raw_steps)
        col.add(
            "top level: steps",
            f"must be a non-empty list of steps, not {kind}",
            doc.key_lines["steps"],
        )
        raw_steps = []
    first_line: dict[str, int | None] = {}
    dep_lines: dict[str, int | None] = {}
    for index, raw in enumerate(raw_steps or [], start=1):
        if not isinstance(raw, dict):
            col.add(
                f"step #{index}",
                f"must be a mapping with name, script and description, not {_type_name(raw)}",
                doc.key_lines.get("steps"),
            )
            continue
        label = f"step '{raw['name']}'" if isinstance(raw.get("name"), str) else f"step #{index}"
        _check_keys(col, label, raw, STEP_KEYS, REQUIRED_STEP_KEYS)
        s_name = _string(col, label, raw, "name")
        s_script = _string(col, label, raw, "script")
        s_desc = _string(col, label, raw, "description", empty=True)
        deps = _string_list(col, label, raw, "depends_on")
        timeout = _number(col, label, raw, "timeout", integer=False, minimum=0)
        retries = _number(col, label, raw, "retries", integer=True, minimum=0)
        retry_delay = _number(col, label, raw, "retry_delay", integer=False, minimum=0)
        env = _string_map(col, label, raw, "env")
        args = _string_list(col, label, raw, "args")
        if isinstance(s_script, str) and s_script.strip():
            _check_script(col, label, raw.key_lines.get("script"), s_script, scripts_dir)
        if not isinstance(s_name, str):
            continue
        if s_name in first_line:
            col.add(
                label,
                f"duplicate step name '{s_name}' (first defined on line {first_line[s_name]}); step names must be unique",
                raw.line,
            )
            continue
        first_line[s_name] = raw.line
        dep_lines[s_name] = raw.key_lines.get("depends_on", raw.line)
        steps.append(
            Step(
                name=s_name,
                script=s_script if isinstance(s_script, str) else "",
                description=s_desc if isinstance(s_desc, str) else "",
                depends_on=deps or (),
                timeout=float(timeout) if timeout is not None else None,
                retries=retries or 0,
                retry_delay=float(retry_delay or 0),
                env=env or {},
                args=args or (),
                line=raw.line,
            )
        )

    names = [s.name for s in steps]
    graph: dict[str, tuple[str, ...]] = {}
    for s in steps:
        ok: list[str] = []
        for dep in s.depends_on:
            where = f"step '{s.name}': depends_on"
            if dep == s.name:
                col.add(
                    where,
                    f"step '{s.name}' depends on itself; remove it from depends_on",
                    dep_lines[s.name],
                )
            elif dep not in first_line:
                hint = did_you_mean(dep, [n for n in names if n != s.name])
                col.add(where, f"unknown step '{dep}'{hint}", dep_lines[s.name])
            else:
                ok.append(dep)
        graph[s.name] = tuple(ok)
    cycle = find_cycle(graph)
    if cycle:
        col.add(
            f"step '{cycle[0]}': depends_on",
            "dependency cycle " + " -> ".join(cycle) + "; remove one of these dependencies",
            dep_lines.get(cycle[0]),
        )

    title = name if isinstance(name, str) else None
    desc = description if isinstance(description, str) else None
    if col.problems:
        return ParseResult(None, tuple(col.problems), title, desc)
    pipeline = Pipeline(
        id=pipeline_id,
        name=name,
        description=description or "",
        steps=tuple(steps),
        source=path,
        scripts_dir=scripts_dir,
        continue_on_failure=continue_on_failure,
        max_parallel=max_parallel or 1,
    )
    return ParseResult(pipeline, (), title, desc)
