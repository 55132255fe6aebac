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
from .spec import (
    Document,
    ParseResult,
    Pipeline,
    Problem,
    did_you_mean,
    display_path,
    load_document,
    validate_document,
)

YAML_SUFFIXES = (".yaml", ".yml")
FOLDER_FILES = ("pipeline.yaml", "pipeline.yml")
UNREADABLE = "unreadable"


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


_documents: dict[str, tuple[tuple[int, int], Document]] = {}
_results: dict[tuple[str, str], tuple[tuple[object, ...], ParseResult]] = {}
_cache_lock = threading.Lock()


def _scripts_signature(document: Document, scripts_dir: Path) -> tuple[object, ...]:
    """What validation depends on besides the YAML: each named script as `lstat` sees it
    (a re-pointed symlink is a new link, so it shows) and the scripts folder itself."""
    folder = str(scripts_dir)
    signature: list[object] = []
    steps = document.doc.get("steps") if document.doc is not None else None
    for path in [folder] + [
        os.path.join(folder, item["script"])
        for item in (steps if isinstance(steps, list) else [])
        if isinstance(item, dict) and isinstance(item.get("script"), str)
    ]:
        try:
            st = os.lstat(path)
            signature.append((st.st_ino, st.st_mtime_ns, st.st_mode, st.st_size))
        except (OSError, ValueError):
            signature.append(None)
    return tuple(signature)


def _parse_cached(path: Path, pipeline_id: str, scripts_dir: Path) -> ParseResult:
    """Validate the file, re-reading the YAML only when its (mtime, size) changed and
    re-checking it only when the YAML or one of its scripts changed on disk."""
    try:
        st = path.stat()
        fingerprint = (st.st_mtime_ns, st.st_size)
    except OSError:
        return validate_document(load_document(path), pipeline_id, path, scripts_dir)
    key = str(path)
    with _cache_lock:
        hit = _documents.get(key)
    if hit and hit[0] == fingerprint:
        document = hit[1]
    else:
        document = load_document(path)
        with _cache_lock:
            _documents[key] = (fingerprint, document)
    signature = (fingerprint, _scripts_signature(document, scripts_dir))
    with _cache_lock:
        checked = _results.get((key, pipeline_id))
    if checked and checked[0] == signature:
        return checked[1]
    result = validate_document(document, pipeline_id, path, scripts_dir)
    with _cache_lock:
        _results[(key, pipeline_id)] = (signature, result)
    return result


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
                try:
                    is_file = path.is_file()
                except OSError:  # a folder we may not read: said, if it is nothing else
                    found.setdefault(entry.name, []).append((path, Path(entry.path), UNREADABLE))
                    break
                if is_file:
                    found.setdefault(entry.name, []).append((path, Path(entry.path), "folder"))
    return found


def _discovered(pipeline_id: str, places: list[tuple[Path, Path, str]]) -> DiscoveredPipeline:
    readable = [p for p in places if p[2] != UNREADABLE]
    if not readable:  # an unreadable folder and no `<id>.yaml`: it may hold a pipeline
        path, scripts_dir, _ = places[0]
        problem = Problem(
            display_path(scripts_dir),
            "folder",
            "cannot be read (permission denied); fix its permissions, or move it out of the "
            "pipelines folder if it holds no pipeline",
        )
        return DiscoveredPipeline(pipeline_id, path, scripts_dir, "folder", None, (problem,))
    places = readable
    path, scripts_dir, layout = places[0]
    if pipeline_id.endswith(".status"):  # `.<id>.lock` would be the status lock of another
        problem = Problem(
            display_path(path),
            "pipeline id",
            f"'{pipeline_id}' may not end in '.status' (its lock file would be the status lock "
            f"of pipeline '{pipeline_id[: -len('.status')]}'); rename the file or folder",
        )
        return DiscoveredPipeline(pipeline_id, path, scripts_dir, layout, None, (problem,))
    if len(places) > 1:
        files = ", ".join(display_path(p) for p, _, _ in places)
        problem = Problem(
            display_path(path),
            "pipeline id",
            f"'{pipeline_id}' is defined by more than one file ({files}); keep one of them",
        )
        return DiscoveredPipeline(pipeline_id, path, scripts_dir, layout, None, (problem,))
    result = _parse_cached(path, pipeline_id, scripts_dir)
    return DiscoveredPipeline(
        id=pipeline_id,
        path=path,
        scripts_dir=scripts_dir,
        layout=layout,
        pipeline=result.pipeline,
        problems=result.problems,
        title=result.title,
        description=result.description,
    )


def discover_pipelines(pipelines_dir: Path) -> list[DiscoveredPipeline]:
    """Every pipeline in `pipelines_dir`, sorted by id; hidden files and folders are skipped."""
    return [_discovered(pid, places) for pid, places in sorted(_candidates(pipelines_dir).items())]


def find_pipeline(pipelines_dir: Path, pipeline_id: str) -> DiscoveredPipeline:
    """The pipeline with this id (only its own file is parsed), or PipelineNotFoundError
    with a close match."""
    candidates = _candidates(pipelines_dir)
    if pipeline_id in candidates:
        return _discovered(pipeline_id, candidates[pipeline_id])
    known = sorted(candidates)
    hint = did_you_mean(pipeline_id, known)
    listing = f" (known: {', '.join(known)})" if known and not hint else ""
    where = display_path(pipelines_dir)
    if not pipelines_dir.is_dir():
        raise PipelineNotFoundError(
            f"no pipeline '{pipeline_id}': the pipelines folder {where} does not exist; "
            "check --pipelines-dir or ORCHESTRATOR_PIPELINES_DIR"
        )
    raise PipelineNotFoundError(f"no pipeline '{pipeline_id}' in {where}{hint}{listing}")
