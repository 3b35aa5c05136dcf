"""The import graph goes only downward.

Every module of common, ring, flusher and capture is parsed (ast) and every
import in it - at module level or inside a function, relative or absolute -
becomes an edge.  The layers, lowest first::

    common                      errors, units, settings, status, histograms
    ring                        the mechanism
    flusher                     the drains: flusher.segments, flusher.publisher
    capture.venues, capture.simulator
    capture.receiver
    capture (top level)         the application: cli, supervisor, config, children, ...

An edge to a higher layer fails, and so does any pair of packages that
import each other.  Beside the order: flusher.segments and flusher.publisher
do not import each other, except that the publisher's catch-up
(flusher.publisher.catchup) reads segment files; the simulator, our
independent cross-check, imports no venue or receiver module.
"""
from __future__ import annotations

import ast
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("common", "ring", "flusher", "capture")


def modules() -> dict[str, str]:
    """module name -> file path, for every .py of the four packages."""
    out = {}
    for pkg in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, pkg)):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
            for fn in filenames:
                if not fn.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fn), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, fn)
    return out


def _resolve(name: str, known: dict[str, str]) -> str | None:
    """The longest known module that ``name`` is or is inside of."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in known:
            return cand
        parts.pop()
    return None


def imports(mod: str, path: str, known: dict[str, str]) -> set[str]:
    """Our modules that ``mod`` imports, anywhere in the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = os.path.basename(path) == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                     for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in PACKAGES:
                t = _resolve(n, known)
                if t is not None and t != mod:
                    out.add(t)
    return out


def unit(mod: str) -> str:
    """The package a module belongs to, as the layering sees it (a venue's
    folder is part of capture.venues; capture's top-level modules are the
    application, ``capture``)."""
    parts = mod.split(".")
    if parts[0] == "flusher" and len(parts) > 1 and parts[1] in ("segments", "publisher"):
        return ".".join(parts[:2])
    if parts[0] == "capture" and len(parts) > 1 and parts[1] in ("venues", "receiver", "simulator"):
        return ".".join(parts[:2])
    return parts[0]


RANK = {"common": 0, "ring": 1, "flusher": 2, "flusher.segments": 2, "flusher.publisher": 2,
        "capture.venues": 3, "capture.simulator": 3, "capture.receiver": 4, "capture": 5}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        us = unit(src)
        for t in sorted(targets):
            ut = unit(t)
            if RANK[ut] > RANK[us]:
                bad.append(f"{src} -> {t}: {us} is below {ut}")
            elif us == "flusher.segments" and ut == "flusher.publisher":
                bad.append(f"{src} -> {t}: the segment files do not know the publisher")
            elif (us == "flusher.publisher" and ut == "flusher.segments"
                  and src != "flusher.publisher.catchup"):
                bad.append(f"{src} -> {t}: only the publisher's catch-up reads segments")
            elif us == "capture.simulator" and ut in ("capture.venues", "capture.receiver"):
                bad.append(f"{src} -> {t}: the simulator is an independent cross-check")
            elif us in ("flusher.segments", "flusher.publisher") and ut == "flusher":
                bad.append(f"{src} -> {t}: a drain does not import the flusher package's entry")
    pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for src, targets in g.items():
        for t in targets:
            if unit(src) != unit(t):
                pairs[(unit(src), unit(t))].append(f"{src} -> {t}")
    for (a, b), edges in sorted(pairs.items()):
        if a < b and (b, a) in pairs:
            bad.append(f"{a} and {b} import each other: {edges[0]}; {pairs[(b, a)][0]}")
    return bad


def test_every_module_is_seen_with_its_function_level_imports():
    """The walk itself: known modules and a function-level import are found
    (so an empty graph cannot pass)."""
    g = graph()
    assert {"common.errors", "ring.reader", "flusher.segments.drain", "flusher.publisher.publish",
            "capture.receiver.process", "capture.venues.kraken.protocol", "capture.supervisor"} <= set(g)
    assert "capture.config" in g["capture.cli"]       # imported inside a function there
    assert "flusher.segments.read" in g["flusher.publisher.catchup"]


def test_the_checker_fails_on_an_upward_edge_and_a_mutual_pair():
    g = {"ring.reader": {"flusher.segments.drain"}, "flusher.segments.drain": {"ring.reader"},
         "flusher.segments.read": {"flusher.publisher.publish"},
         "capture.simulator.server": {"capture.venues.base"}, "common.errors": set()}
    bad = violations(g)
    assert any("ring.reader -> flusher.segments.drain" in b for b in bad)
    assert any("import each other" in b and "flusher.segments" in b and "ring" in b for b in bad)
    assert any("segment files do not know the publisher" in b for b in bad)
    assert any("independent cross-check" in b for b in bad)


def test_imports_only_go_downward():
    bad = violations(graph())
    assert not bad, "import edges against the layering:\n" + "\n".join(bad)
