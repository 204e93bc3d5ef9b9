"""Process-wide caches of the real models' metadata, lanner tokenizers and reference tokenizers.

Owns: loading each expensive object once per test session (GGUFReader on Gemma's 262k vocabulary
takes ~10 s, transformers' GGUF tokenizer loader ~25 s) and sharing it across test modules.
Must not: change what is loaded; tests compare against these objects as they come.
Names: "smollm2" (SmolLM2-135M-Instruct, gpt2/smollm) and "gemma3" (Gemma 3 270M, llama/SPM).
"""

from __future__ import annotations

import functools
from pathlib import Path

from gguf import GGUFReader as _GGUFReader
from gguf_metadata import read_metadata
from lanner.default_model import gemma3_path, smollm2_path

MODELS = ("smollm2", "gemma3")


def model_path(name: str) -> Path:
    return {"smollm2": smollm2_path, "gemma3": gemma3_path}[name]()


@functools.lru_cache(maxsize=None)
def _reader(path: str):
    return _GGUFReader(path, "r")  # the real class, even while hf_tokenizer swaps gguf's


@functools.lru_cache(maxsize=None)
def _metadata(name: str) -> dict:
    path = str(model_path(name))
    return read_metadata(path, reader=_reader(path))


def metadata(name: str) -> dict:
    """The model's GGUF metadata dict (a shallow copy: tests may add or delete keys)."""
    return dict(_metadata(name))


@functools.lru_cache(maxsize=None)
def lanner_tokenizer(name: str):
    from lanner.text.tokenizer import Tokenizer

    return Tokenizer.from_metadata(_metadata(name))


@functools.lru_cache(maxsize=None)
def hf_tokenizer(name: str):
    """transformers' own GGUF loader: AutoTokenizer.from_pretrained(dir, gguf_file=name).

    transformers 4.x refuses GGUF files unless torch is importable, although the tokenizer path
    never touches torch (only tensor loading does); we lift that guard instead of installing
    torch. transformers 5.x imports torch unconditionally in its GGUF reader, so it cannot be
    used here without torch. Its loader opens the file twice with gguf.GGUFReader; both opens
    are served by the reader our metadata came from (parsing it once saves ~20 s on Gemma).
    """
    import gguf
    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        raise RuntimeError("the reference needs transformers<5 (5.x's GGUF reader imports torch)")
    saved = gguf_utils.is_torch_available, gguf.GGUFReader
    gguf_utils.is_torch_available = lambda: True
    gguf.GGUFReader = lambda p, *a, **k: _reader(str(p))
    try:
        path = model_path(name)
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        gguf_utils.is_torch_available, gguf.GGUFReader = saved


@functools.lru_cache(maxsize=None)
def spm_processor(name: str):
    from spm_reference import build_spm_processor

    return build_spm_processor(_metadata(name))


def llama_cpp_vocab(name: str):
    """llama.cpp (llama-cpp-python, vocab only; close() it) or None when it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.Llama(str(model_path(name)), vocab_only=True, verbose=False)
