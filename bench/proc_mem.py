"""Memory of a process tree from /proc: per process RSS, PSS and USS, split by what the pages are.

Used by bench_server.py and bench_memory.py. RSS counts every resident page a process maps, so
summing RSS over a fork tree (gunicorn arbiter + worker) counts pages they share (libraries,
the arbiter's heap before fork) twice; PSS divides each shared page among its sharers, so the
PSS sum is the tree's real footprint, and USS (private pages) is what killing one process frees.
Linux only (smaps_rollup: kernel >= 4.14); all figures MiB.
"""

from __future__ import annotations

import os
import re

_MAP_LINE = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants, parents first."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def rollup(pid: int) -> dict[str, float]:
    """rss, pss, uss and anon (anonymous pages: heaps, ggml buffers) of one process, MiB."""
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                kb[key] = int(rest.split()[0])
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024,
            "anon": kb.get("Anonymous", 0) / 1024}


def _kind(name: str, model_path: str | None) -> str:
    if model_path and name == model_path:
        return "model file"
    if not name or name == "[heap]" or name.startswith("[anon"):
        return "anon"
    if name.startswith("["):
        return "stack/kernel"
    return "libraries" if ".so" in os.path.basename(name) else "other files"


def split(pid: int, model_path: str | None = None) -> dict[str, dict[str, float]]:
    """PSS and RSS of one process by kind of mapping: anon (malloc heaps, ggml's weight, KV and
    compute buffers, Python objects), libraries (.so text and data), model file (if mapped),
    other files, stack/kernel. MiB."""
    out: dict[str, dict[str, float]] = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _MAP_LINE.match(line)
            if m:
                cur = out.setdefault(_kind(m.group(1).strip(), model_path), {"rss": 0.0, "pss": 0.0})
            elif line.startswith("Rss:"):
                cur["rss"] += int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                cur["pss"] += int(line.split()[1]) / 1024
    return out


def tree(pid: int) -> list[dict]:
    """rollup() of each process of the tree, with its pid and command name."""
    rows = []
    for p in tree_pids(pid):
        try:
            r = rollup(p)
            with open(f"/proc/{p}/comm") as f:
                r["name"] = f.read().strip()
        except OSError:  # exited meanwhile
            continue
        r["pid"] = p
        rows.append(r)
    return rows


def tree_totals(pid: int) -> dict[str, float]:
    """Sums over the tree: pss (the honest total), rss (double-counts shared pages), uss."""
    rows = tree(pid)
    return {k: sum(r[k] for r in rows) for k in ("rss", "pss", "uss")}
