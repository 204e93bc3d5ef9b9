"""Run single ggml ops on the CPU through ctypes, on the very libggml build the core links: the
ground truth that ggml_numerics.py is checked against op by op.

Only ggml's public C API is used (ggml.h, ggml-cpu.h): a context that owns its memory, tensors
filled from numpy, one graph computed with ggml_graph_compute_with_ctx, the result copied back.

    with GgmlContext() as g:
        y = g.run(g.mul_mat(g.tensor(raw_rows, Q4_1, ne=[n_in, n_out]), g.tensor(x)), (n, n_out))
"""

from __future__ import annotations

import ctypes as C
import os

import numpy as np

F32, F16, I32 = 0, 1, 26  # enum ggml_type values used here
PREC_F32 = 10             # enum ggml_prec: GGML_PREC_F32


def _libs():
    import libggml  # the libggml-python package the core's build links

    lib64 = os.path.join(os.path.dirname(libggml.__file__), "lib64")
    base = C.CDLL(os.path.join(lib64, "libggml-base.so"), mode=C.RTLD_GLOBAL)
    cpu = C.CDLL(os.path.join(lib64, "libggml-cpu.so"), mode=C.RTLD_GLOBAL)
    return base, cpu


class _InitParams(C.Structure):
    _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", C.c_void_p), ("no_alloc", C.c_bool)]


_P, _I, _F = C.c_void_p, C.c_int, C.c_float
_API = {  # name: (library, restype, argtypes)
    "ggml_init": ("base", _P, [_InitParams]),
    "ggml_free": ("base", None, [_P]),
    "ggml_new_tensor_1d": ("base", _P, [_P, _I, C.c_int64]),
    "ggml_new_tensor_2d": ("base", _P, [_P, _I, C.c_int64, C.c_int64]),
    "ggml_new_tensor_3d": ("base", _P, [_P, _I, C.c_int64, C.c_int64, C.c_int64]),
    "ggml_get_data": ("base", _P, [_P]),
    "ggml_nbytes": ("base", C.c_size_t, [_P]),
    "ggml_mul_mat": ("base", _P, [_P, _P, _P]),
    "ggml_mul": ("base", _P, [_P, _P, _P]),
    "ggml_rms_norm": ("base", _P, [_P, _P, _F]),
    "ggml_swiglu_split": ("base", _P, [_P, _P, _P]),
    "ggml_geglu_split": ("base", _P, [_P, _P, _P]),
    "ggml_permute": ("base", _P, [_P, _P, _I, _I, _I, _I]),
    "ggml_cont": ("base", _P, [_P, _P]),
    "ggml_rope_ext": ("base", _P, [_P, _P, _P, _P, _I, _I, _I, _F, _F, _F, _F, _F, _F]),
    "ggml_flash_attn_ext": ("base", _P, [_P, _P, _P, _P, _P, _F, _F, _F]),
    "ggml_flash_attn_ext_set_prec": ("base", None, [_P, _I]),
    "ggml_soft_max_ext": ("base", _P, [_P, _P, _P, _F, _F]),
    "ggml_new_graph": ("base", _P, [_P]),
    "ggml_build_forward_expand": ("base", None, [_P, _P]),
    "ggml_graph_compute_with_ctx": ("cpu", _I, [_P, _P, _I]),
}
_FN: dict = {}


def _fn(name: str):
    if not _FN:
        base, cpu = _libs()
        for n, (lib, res, args) in _API.items():
            f = getattr(base if lib == "base" else cpu, n)
            f.restype, f.argtypes = res, args
            _FN[n] = f
    return _FN[name]


class GgmlContext:
    """One ggml context (its own memory) to build and run a small graph."""

    def __init__(self, mem_bytes: int = 256 << 20):
        self.ctx = _fn("ggml_init")(_InitParams(mem_bytes, None, False))
        if not self.ctx:
            raise MemoryError("ggml_init failed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _fn("ggml_free")(self.ctx)

    def tensor(self, data: np.ndarray, gtype: int = F32, ne: list[int] | None = None):
        """A tensor holding `data`: numpy shape = reversed ne (or raw block bytes with ne)."""
        ne = list(reversed(data.shape)) if ne is None else ne
        t = _fn(f"ggml_new_tensor_{len(ne)}d")(self.ctx, gtype, *ne)
        buf = np.ascontiguousarray(data)
        if buf.nbytes != _fn("ggml_nbytes")(t):
            raise ValueError(f"{buf.nbytes} bytes for a tensor of {_fn('ggml_nbytes')(t)}")
        C.memmove(_fn("ggml_get_data")(t), buf.ctypes.data, buf.nbytes)
        return t

    def __getattr__(self, op: str):
        """g.mul_mat(a, b) == ggml_mul_mat(ctx, a, b), for the ops in _API."""
        f = _fn("ggml_" + op)
        return lambda *args: f(self.ctx, *args)

    def run(self, out, shape: tuple, n_threads: int = 2) -> np.ndarray:
        """Compute the graph ending in `out` (float32) and return it in numpy shape `shape`."""
        graph = _fn("ggml_new_graph")(self.ctx)
        _fn("ggml_build_forward_expand")(graph, out)
        if _fn("ggml_graph_compute_with_ctx")(self.ctx, graph, n_threads) != 0:
            raise RuntimeError("ggml_graph_compute failed")
        res = np.empty(_fn("ggml_nbytes")(out) // 4, np.float32)
        C.memmove(res.ctypes.data, _fn("ggml_get_data")(out), res.nbytes)
        return res.reshape(shape)


def flash_attn_set_prec_f32(t) -> None:
    _fn("ggml_flash_attn_ext_set_prec")(t, PREC_F32)
