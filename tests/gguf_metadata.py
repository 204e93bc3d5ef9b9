"""Read a GGUF file's key/value metadata into the plain dict the native core hands to Python.

Owns: the test-side stand-in for the core's metadata export (`read_metadata(path) -> dict`).
Format (the contract `Tokenizer.from_metadata` / `ChatTemplate.from_metadata` code against):
keys are the GGUF keys; scalars become str / int / float / bool; string arrays `list[str]`;
numeric arrays 1-D numpy arrays of the stored dtype (scores float32, token_type int32).
Must not: read tensors or import lanner's native extension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType

_INT_TYPES = {
    GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
    GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64,
}
_FLOAT_TYPES = {GGUFValueType.FLOAT32, GGUFValueType.FLOAT64}


def _scalar(vtype: GGUFValueType, part: np.ndarray) -> Any:
    if vtype == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    if vtype == GGUFValueType.BOOL:
        return bool(part[0])
    if vtype in _INT_TYPES:
        return int(part[0])
    if vtype in _FLOAT_TYPES:
        return float(part[0])
    raise ValueError(f"unsupported GGUF value type {vtype!r}")


def _value(field) -> Any:
    types = field.types
    if types[0] != GGUFValueType.ARRAY:
        return _scalar(types[0], field.parts[field.data[0]])
    sub = types[-1]
    if len(types) > 2:  # array of arrays: rare; keep it as a plain list of raw items
        return [field.parts[i].tolist() for i in field.data]
    if sub == GGUFValueType.STRING:
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    if not field.data:
        return np.zeros(0, dtype=np.float32 if sub in _FLOAT_TYPES else np.int32)
    if sub == GGUFValueType.BOOL:
        return np.array([bool(field.parts[i][0]) for i in field.data], dtype=bool)
    return np.concatenate([field.parts[i] for i in field.data]).copy()  # (n,), stored dtype


def read_metadata(path: str | Path, reader: GGUFReader | None = None) -> dict[str, Any]:
    """All key/value pairs of the GGUF at `path` (GGUF.* header pseudo-keys excluded).

    `reader`: an already open GGUFReader of that file (opening one parses every array item,
    ~10 s for a 262k vocabulary), else one is opened here.
    """
    reader = reader if reader is not None else GGUFReader(str(path), "r")
    return {name: _value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
