"""Find pipelines in a folder, in both of the seed's layouts, one result per pipeline.

`<dir>/<id>.yaml` (or `.yml`) with scripts in `<dir>/<id>/`, and `<dir>/<id>/pipeline.yaml`
with scripts beside it. A broken file gives that pipeline its problems and never stops the
others. Parsed files are cached by (mtime, size), so edits show up on the next call.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineNotFoundError
from .spec import ParseResult, Pipeline, Problem, did_you_mean, display_path, parse_pipeline_file

YAML_SUFFIXES = (".yaml", ".yml")
FOLDER_FILES = ("pipeline.yaml", "pipeline.yml")


@dataclass(frozen=True)
class DiscoveredPipeline:
    """One pipeline found on disk: valid (with `pipeline`) or not (with `problems`)."""

    id: str
    path: Path
    scripts_dir: Path
    layout: str  # "file" (<id>.yaml) or "folder" (<id>/pipeline.yaml)
    pipeline: Pipeline | None
    problems: tuple[Problem, ...]
    title: str | None = None
    description: str | None = None

    @property
    def valid(self) -> bool:
        """True when the pipeline can run."""
        return self.pipeline is not None and not self.problems

    @property
    def name(self) -> str:
        """The human name from the YAML, or the id when the YAML has none."""
        return self.title or self.id


_cache: dict[tuple[str, str], tuple[tuple[int, int, int], ParseResult]] = {}
_cache_lock = threading.Lock()


def _fingerprint(path: Path, scripts_dir: Path) -> tuple[int, int, int]:
    st = path.stat()
    try:
        # A script added or removed changes the folder's mtime, so validation is redone.
        folder = scripts_dir.stat().st_mtime_ns
    except OSError:
        folder = 0
    return (st.st_mtime_ns, st.st_size, folder)


def _parse_cached(path: Path, pipeline_id: str, scripts_dir: Path) -> ParseResult:
    key = (str(path), pipeline_id)
    try:
        fp = _fingerprint(path, scripts_dir)
    except OSError:
        return parse_pipeline_file(path, pipeline_id, scripts_dir)
    with _cache_lock:
        hit = _cache.get(key)
    if hit and hit[0] == fp and _scripts_still_there(hit[1]):
        return hit[1]
    result = parse_pipeline_file(path, pipeline_id, scripts_dir)
    with _cache_lock:
        _cache[key] = (fp, result)
    return result


def _scripts_still_there(result: ParseResult) -> bool:
    # A script edited or deleted in place does not touch the YAML; a cheap stat catches it.
    if result.pipeline is None:
        return True
    return all(result.pipeline.script_path(s).is_file() for s in result.pipeline.steps)


def _candidates(pipelines_dir: Path) -> dict[str, list[tuple[Path, Path, str]]]:
    found: dict[str, list[tuple[Path, Path, str]]] = {}
    try:
        entries = sorted(os.scandir(pipelines_dir), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_file():
            stem, suffix = os.path.splitext(entry.name)
            if suffix in YAML_SUFFIXES:
                path = Path(entry.path)
                found.setdefault(stem, []).append((path, pipelines_dir / stem, "file"))
        elif entry.is_dir():
            for fname in FOLDER_FILES:
                path = Path(entry.path) / fname
                if path.is_file():
                    found.setdefault(entry.name, []).append((path, Path(entry.path), "folder"))
    return found


def discover_pipelines(pipelines_dir: Path) -> list[DiscoveredPipeline]:
    """Every pipeline in `pipelines_dir`, sorted by id; hidden files and folders are skipped."""
    out: list[DiscoveredPipeline] = []
    for pipeline_id, places in sorted(_candidates(pipelines_dir).items()):
        if len(places) > 1:
            files = " and ".join(display_path(p) for p, _, _ in places)
            problem = Problem(
                display_path(places[0][0]),
                "pipeline id",
                f"'{pipeline_id}' is defined twice, by {files}; keep one of them",
            )
            path, scripts_dir, layout = places[0]
            out.append(DiscoveredPipeline(pipeline_id, path, scripts_dir, layout, None, (problem,)))
            continue
        path, scripts_dir, layout = places[0]
        result = _parse_cached(path, pipeline_id, scripts_dir)
        out.append(
            DiscoveredPipeline(
                id=pipeline_id,
                path=path,
                scripts_dir=scripts_dir,
                layout=layout,
                pipeline=result.pipeline,
                problems=result.problems,
                title=result.title,
                description=result.description,
            )
        )
    return out


def find_pipeline(pipelines_dir: Path, pipeline_id: str) -> DiscoveredPipeline:
    """The pipeline with this id, or PipelineNotFoundError with a close match."""
    found = discover_pipelines(pipelines_dir)
    for d in found:
        if d.id == pipeline_id:
            return d
    known = [d.id for d in found]
    hint = did_you_mean(pipeline_id, known)
    listing = f" (known: {', '.join(known)})" if known and not hint else ""
    raise PipelineNotFoundError(
        f"no pipeline '{pipeline_id}' in {display_path(pipelines_dir)}{hint}{listing}"
    )
