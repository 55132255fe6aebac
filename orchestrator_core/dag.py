"""The dependency graph of a pipeline: order, parallel waves, upstream/downstream and cycles.

Pure functions over `{step: (dependencies...)}`; the order among independent steps follows
the order of the mapping (the file order), so plans read the way the YAML does.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

Graph = Mapping[str, Iterable[str]]


def find_cycle(graph: Graph) -> list[str] | None:
    """A dependency cycle as a path `[a, b, c, a]`, or None when the graph has none."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for root in graph:
        if colour[root] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(root, [d for d in graph[root] if d in graph])]
        path = [root]
        colour[root] = GREY
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            dep = pending.pop(0)
            if colour[dep] == GREY:
                return [*path[path.index(dep) :], dep]
            if colour[dep] == WHITE:
                colour[dep] = GREY
                path.append(dep)
                stack.append((dep, [d for d in graph[dep] if d in graph]))
    return None


def topo_order(graph: Graph) -> list[str]:
    """Steps so that each comes after all it depends on (file order among equals)."""
    return [name for wave in waves(graph) for name in wave]


def waves(graph: Graph) -> list[list[str]]:
    """Groups of steps that could run at the same time, each after the groups before it."""
    position = {name: i for i, name in enumerate(graph)}
    sorter = graphlib.TopologicalSorter(
        {n: [d for d in ds if d in graph] for n, ds in graph.items()}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ValueError("dependency cycle: " + " -> ".join(reversed(exc.args[1]))) from exc
    out: list[list[str]] = []
    while sorter.is_active():
        wave = sorted(sorter.get_ready(), key=position.__getitem__)
        out.append(wave)
        sorter.done(*wave)
    return out


def upstream(graph: Graph, step: str) -> set[str]:
    """Every step that `step` depends on, directly or not (not the step itself)."""
    seen: set[str] = set()
    todo = [d for d in graph[step] if d in graph]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(d for d in graph[node] if d in graph)
    return seen


def dependents(graph: Graph) -> dict[str, list[str]]:
    """Step -> the steps that depend on it directly."""
    out: dict[str, list[str]] = {n: [] for n in graph}
    for name, deps in graph.items():
        for d in deps:
            if d in out:
                out[d].append(name)
    return out


def downstream(graph: Graph, step: str) -> set[str]:
    """Every step that depends on `step`, directly or not (not the step itself)."""
    children = dependents(graph)
    seen: set[str] = set()
    todo = list(children[step])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(children[node])
    return seen
