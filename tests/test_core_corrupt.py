"""Damaged GGUF files must raise a clean Python exception naming the problem, never crash.

Each case starts from a valid tiny model (tests/tiny_gguf.py) and damages one thing: bytes
of the header, counts, lengths, dims, types and offsets patched in place (located by walking
the GGUF layout below), truncation, or bad metadata/tensors written on purpose.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import lanner._core as core
from tiny_gguf import N_EMBD, write_tiny_arch, write_tiny_llama

# ---- a minimal GGUF walker: where each field lives (byte offsets) ----------------------------

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type -> bytes


def _layout(buf: bytes) -> dict:
    off = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    kv = {}
    for _ in range(n_kv):
        klen_at = off
        (klen,) = struct.unpack_from("<Q", buf, off)
        key = buf[off + 8 : off + 8 + klen].decode()
        off += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, off)
        type_at = off
        off += 4
        val_at = off
        if vtype == 8:
            (slen,) = struct.unpack_from("<Q", buf, off)
            off += 8 + slen
        elif vtype == 9:
            atype, n = struct.unpack_from("<IQ", buf, off)
            off += 12
            for _ in range(n):
                if atype == 8:
                    (slen,) = struct.unpack_from("<Q", buf, off)
                    off += 8 + slen
                else:
                    off += _SCALAR[atype]
        else:
            off += _SCALAR[vtype]
        kv[key] = {"key_len_at": klen_at, "type_at": type_at, "val_at": val_at}
    tensors = {}
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", buf, off)
        name = buf[off + 8 : off + 8 + nlen].decode()
        off += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", buf, off)
        ne_at = off + 4
        off += 4 + 8 * n_dims
        tensors[name] = {"n_dims_at": ne_at - 4, "ne_at": ne_at, "type_at": off, "offset_at": off + 4}
        off += 12
    return {"kv": kv, "tensors": tensors, "info_end": off}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    p = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "good.gguf")
    core.Model(p)  # the undamaged file loads
    return open(p, "rb").read()


def _patched(buf: bytes, at: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def _load(tmp_path, data: bytes, match: str):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=match) as ei:
        core.Model(str(p))
    assert str(p) in str(ei.value) or "not found" in str(ei.value)
    return ei.value


# ---- byte-level damage ---------------------------------------------------------------------------


def test_empty_file(tmp_path):
    _load(tmp_path, b"", "too short")


def test_bad_magic(tmp_path, good):
    _load(tmp_path, b"GGML" + good[4:], "bad magic")


def test_unsupported_version(tmp_path, good):
    _load(tmp_path, _patched(good, 4, "<I", 99), "version")


def test_truncated_header(tmp_path, good):
    _load(tmp_path, good[:30], "invalid model file")


def test_truncated_metadata(tmp_path, good):
    cut = _layout(good)["info_end"] // 2
    _load(tmp_path, good[:cut], "invalid model file")


def test_truncated_tensor_data(tmp_path, good):
    _load(tmp_path, good[:-100], "past the end of the file|invalid model file")


def test_absurd_tensor_count(tmp_path, good):
    _load(tmp_path, _patched(good, 8, "<Q", 1 << 60), "invalid model file")


def test_absurd_kv_count(tmp_path, good):
    _load(tmp_path, _patched(good, 16, "<Q", 1 << 62), "invalid model file")


def test_string_length_overflow(tmp_path, good):
    first = _layout(good)["kv"]["general.architecture"]["key_len_at"]
    _load(tmp_path, _patched(good, first, "<Q", 0xFFFFFFFFFFFFFFF0), "invalid model file")


def test_bad_value_type(tmp_path, good):
    at = _layout(good)["kv"]["llama.block_count"]["type_at"]
    _load(tmp_path, _patched(good, at, "<I", 77), "invalid model file")


def test_absurd_tensor_dims(tmp_path, good):
    at = _layout(good)["tensors"]["blk.0.attn_q.weight"]["ne_at"]
    _load(tmp_path, _patched(good, at, "<q", 1 << 61), "invalid model file")


def test_too_many_dims(tmp_path, good):
    at = _layout(good)["tensors"]["blk.0.attn_q.weight"]["n_dims_at"]
    _load(tmp_path, _patched(good, at, "<I", 1000), "invalid model file")


def test_invalid_tensor_type(tmp_path, good):
    at = _layout(good)["tensors"]["blk.0.attn_q.weight"]["type_at"]
    _load(tmp_path, _patched(good, at, "<I", 1000), "invalid model file")


def test_tensor_offset_past_end(tmp_path, good):
    at = _layout(good)["tensors"]["output_norm.weight"]["offset_at"]
    _load(tmp_path, _patched(good, at, "<Q", 1 << 40), "invalid model file")


# ---- well-formed files with wrong content --------------------------------------------------------


def test_unsupported_architecture_names_itself(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", arch="mamba9")
    with pytest.raises(ValueError, match="unsupported architecture 'mamba9'.*llama"):
        core.Model(p)


def test_missing_required_tensor(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", skip_tensors={"blk.1.ffn_up.weight"})
    with pytest.raises(ValueError, match="missing required tensor 'blk.1.ffn_up.weight'"):
        core.Model(p)


def test_missing_required_key(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", block_count=None)
    with pytest.raises(ValueError, match="missing required key 'llama.block_count'"):
        core.Model(p)


def test_key_with_wrong_type(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", block_count="two")
    with pytest.raises(ValueError, match="'llama.block_count' has type str.*expected an integer"):
        core.Model(p)


def test_tensor_with_wrong_shape(tmp_path):
    bad = {"blk.0.attn_q.weight": np.zeros((N_EMBD + 8, N_EMBD), np.float32)}
    p = write_tiny_llama(tmp_path / "m.gguf", tensor_overrides=bad)
    with pytest.raises(ValueError, match="'blk.0.attn_q.weight' has shape"):
        core.Model(p)


def test_head_count_not_dividing(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", **{"attention.head_count_kv": 3})
    with pytest.raises(ValueError, match="head_count_kv"):
        core.Model(p)


def test_absurd_block_count(tmp_path):
    p = write_tiny_llama(tmp_path / "m.gguf", block_count=1 << 30)
    with pytest.raises(ValueError, match="block_count"):
        core.Model(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        core.Model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ValueError, match="not a regular file"):
        core.Model(str(tmp_path))


# ---- families: MoE / attention-sink / bias metadata that does not match the tensors ----------

FAMILY_DAMAGE = [
    # (arch, metadata overrides, skipped tensors, tensor overrides, error pattern)
    ("qwen3moe", {"expert_count": 8}, (), {},
     r"ffn_gate_inp.weight' has shape \[32, 4\], expected \[32, 8\]"),
    ("qwen3moe", {"expert_count": 3}, (), {}, r"ffn_gate_inp.weight' has shape"),
    ("qwen3moe", {"expert_count": None}, (), {}, r"expert_count = 0"),
    ("qwen3moe", {"expert_used_count": 5}, (), {}, r"expert_used_count = 5 \(expert_count 4\)"),
    ("qwen3moe", {"expert_used_count": 0}, (), {}, r"expert_used_count = 0"),
    ("qwen3moe", {"expert_feed_forward_length": 64}, (), {}, r"ffn_gate_exps.weight' has shape"),
    ("qwen3moe", {}, (), {"blk.1.ffn_up_exps.weight": np.zeros((3, 32, 32), np.float32)},
     r"blk.1.ffn_up_exps.weight' has shape \[32, 32, 3\], expected \[32, 32, 4\]"),
    ("qwen3moe", {}, ("blk.0.ffn_down_exps.weight",), {}, r"missing required tensor 'blk.0.ffn_down_exps"),
    ("gpt-oss", {"expert_count": 2}, (), {}, r"ffn_gate_inp.weight' has shape"),
    ("gpt-oss", {}, (), {"blk.0.attn_sinks.weight": np.zeros(5, np.float32)},
     r"attn_sinks.weight' has shape \[5\], expected \[4\]"),
    ("gpt-oss", {}, (), {"blk.1.attn_sinks.weight": np.zeros((4, 2), np.float32)},
     r"attn_sinks.weight' has shape \[2, 4\], expected \[4\]"),
    ("gpt-oss", {}, ("blk.1.attn_sinks.weight",), {}, r"missing required tensor 'blk.1.attn_sinks.weight'"),
    ("gpt-oss", {}, ("blk.0.ffn_gate_exps.bias",), {}, r"missing required tensor 'blk.0.ffn_gate_exps.bias'"),
    ("gpt-oss", {}, (), {"blk.0.ffn_down_exps.bias": np.zeros((4, 16), np.float32)},
     r"ffn_down_exps.bias' has shape \[16, 4\], expected \[32, 4\]"),
    ("gpt-oss", {"attention.sliding_window": None}, (), {}, r"sliding_window"),
    ("gpt-oss", {"rope.dimension_count": 4}, (), {}, r"rope.dimension_count == key_length"),
    ("qwen2", {}, (), {"blk.0.attn_k.bias": np.zeros(17, np.float32)},
     r"attn_k.bias' has shape \[17\], expected \[16\]"),
    ("qwen3", {}, ("blk.1.attn_k_norm.weight",), {}, r"missing required tensor 'blk.1.attn_k_norm"),
]


@pytest.mark.parametrize("arch,kv,skip,override,match", FAMILY_DAMAGE)
def test_family_metadata_mismatch(tmp_path, arch, kv, skip, override, match):
    p = write_tiny_arch(tmp_path / "m.gguf", arch, skip_tensors=skip, tensor_overrides=override, **kv)
    with pytest.raises(core.ModelLoadError, match=match) as ei:
        core.Model(p)
    assert p in str(ei.value)


def test_process_still_healthy_after_errors(tmp_path, good):
    # after all the failures above, a good model still loads and decodes in this process
    p = tmp_path / "ok.gguf"
    p.write_bytes(good)
    m = core.Model(str(p))
    c = core.Context(m, n_ctx=32, n_batch=8, n_seq_max=1, n_threads=1)
    out = c.decode(np.arange(4, dtype=np.int32), np.arange(4, dtype=np.int32), np.zeros(4, np.int32), np.ones(4, bool))
    assert out.shape == (4, m.n_vocab) and np.isfinite(out).all()


# ---- family metadata and tensors (tests/tiny_gguf.py families) ---------------------------------

from tiny_gguf import write_tiny_family  # noqa: E402

_F32 = np.float32
FAMILY_DAMAGE = [
    # (family, writer overrides, message)
    ("llama3", dict(tensor_overrides={"rope_freqs.weight": np.ones(7, _F32)}),
     r"'rope_freqs.weight' has shape \[7\], expected \[8\]"),
    ("llama3", dict(tensor_overrides={"rope_freqs.weight": np.ones(8, np.float16)}),
     "'rope_freqs.weight' has type f16, expected f32"),
    ("llama3", dict(skip_tensors={"rope_freqs.weight"}, **{"rope.scaling.type": "llama3"}),
     "llama3 needs the rope_freqs tensor"),
    ("llama3", {"rope.scaling.type": "yarn"}, "rope.scaling.type 'yarn' is not supported for llama"),
    ("mistral", {"attention.sliding_window": "six"}, "'llama.attention.sliding_window' has type str"),
    ("phi3", dict(tensor_overrides={"rope_factors_long.weight": np.ones(16, _F32)}),
     r"'rope_factors_long.weight' has shape \[16\], expected \[8\]"),
    ("phi3", dict(tensor_overrides={"rope_factors_short.weight": np.ones((2, 8), _F32)}),
     r"'rope_factors_short.weight' has shape \[8, 2\], expected \[8\]"),
    ("phi3", dict(skip_tensors={"rope_factors_short.weight"}), "must come together"),
    ("phi3", dict(tensor_overrides={"blk.1.attn_qkv.weight": np.zeros((96, 64), _F32)}),
     r"'blk.1.attn_qkv.weight' has shape \[64, 96\], expected \[64, 128\]"),
    ("phi3", dict(skip_tensors={"blk.0.attn_qkv.weight"}), "missing required tensor 'blk.0.attn_q.weight'"),
    ("phi3", dict(tensor_overrides={"blk.0.ffn_up.weight": np.zeros((96, 64), _F32)}),
     r"'blk.0.ffn_up.weight' has shape \[64, 96\], expected \[64, 192\]"),
    ("phi3", {"rope.scaling.attn_factor": 0.0}, "rope.scaling.attn_factor"),
    ("gemma2", {"final_logit_softcapping": -1.0}, "soft-capping values must be positive"),
    ("gemma2", {"attention.sliding_window_pattern": 0}, "sliding_window_pattern = 0"),
    ("gemma2", dict(skip_tensors={"blk.3.post_ffw_norm.weight"}),
     "missing required tensor 'blk.3.post_ffw_norm.weight'"),
]


@pytest.mark.parametrize("family,damage,match", FAMILY_DAMAGE,
                         ids=[f"{f}-{m[:24]}" for f, _, m in FAMILY_DAMAGE])
def test_family_damage_is_a_clean_error(tmp_path, family, damage, match):
    p = write_tiny_family(tmp_path / "bad.gguf", family, **damage)
    with pytest.raises(core.ModelLoadError, match=match) as ei:
        core.Model(p)
    assert str(p) in str(ei.value)
