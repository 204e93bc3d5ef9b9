"""Compute backends: which of ggml's (cpu, cuda, metal) this build has, and the ggml device a
`--backend` choice means.

`auto` leaves the choice to the core (the first GPU device, else the CPU; $LANNER_DEVICE=cpu
forces the CPU); `cpu`/`cuda`/`metal` name a ggml backend registry entry and fail with a clear
ValueError when this build lacks it. probe_devices() asks a child process, so a server's
arbiter can check before forking without initialising a GPU runtime in itself.
Must not: load models (llm.py) or read settings (the server passes the name in).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Optional

BACKENDS = ("auto", "cpu", "cuda", "metal")
_REGISTRY_NAMES = {"cpu": ("cpu",), "cuda": ("cuda",), "metal": ("metal", "mtl")}  # lowercased


def normalize_backend(name: str) -> str:
    """'CUDA', 'ggml_cuda' (the TensorSharp spelling) -> 'cuda'; ValueError if unknown."""
    b = (name or "auto").strip().lower()
    if b.startswith("ggml_"):
        b = b[len("ggml_"):]
    if b not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return b


def list_devices() -> list[dict]:
    """ggml's device registry in this process: [{name, backend, type, description}]."""
    from . import _core

    return list(_core.devices())


def probe_devices() -> list[dict]:
    """list_devices() run in a child process (a GPU runtime initialised before fork() would be
    unusable in the forked worker)."""
    code = "import json, lanner.backends as b; print(json.dumps(b.list_devices()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"could not list ggml's devices: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def backend_of(device: dict) -> str:
    """The --backend name of a registry entry ('MTL' -> 'metal'); other backends lowercased."""
    reg = str(device["backend"]).lower()
    for name, regs in _REGISTRY_NAMES.items():
        if reg in regs:
            return name
    return reg


def available_backends(devices: Optional[list[dict]] = None) -> list[str]:
    """Backend names this build has, in registry order, e.g. ['cuda', 'cpu']."""
    out: list[str] = []
    for d in devices if devices is not None else list_devices():
        b = backend_of(d)
        if b not in out:
            out.append(b)
    return out


def device_for(backend: str, devices: Optional[list[dict]] = None) -> str:
    """The ggml device name to load on ('' for auto: the core decides), or ValueError."""
    b = normalize_backend(backend)
    if b == "auto":
        return ""
    devices = devices if devices is not None else list_devices()
    for d in devices:
        if backend_of(d) == b:
            return str(d["name"])
    have = ", ".join(available_backends(devices)) or "none"
    raise ValueError(f"backend {b!r} is not in this build of ggml (available: {have}); "
                     f"see third_party/README.md for GPU builds")
