"""The native vision core: mmproj loading (validated like text models), the encoder + projector
graphs against a numpy reference (tests/tiny_mmproj.py), and the text context taking embedding
rows in place of token ids, with Gemma 3's image block attending bidirectionally."""

from __future__ import annotations

import numpy as np
import pytest

from lanner import _core
from reference.numpy_forward import ReferenceModel
import tiny_mmproj as tm
import tiny_vlm


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _images(n: int = 3, side: int = 32) -> list[np.ndarray]:
    """Normalised planar images: noise, a gradient, a checkerboard."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    out = [rng.uniform(-1, 1, (3, side, side)),
           np.stack([xx, yy, 1 - xx]) * 2 - 1,
           np.broadcast_to(((np.add.outer(np.arange(side) // 4, np.arange(side) // 4) % 2) * 2 - 1.0), (3, side, side))]
    return [o.astype(np.float32) for o in out[:n]]


@pytest.mark.parametrize("proj", ["gemma3", "mlp"])
@pytest.mark.parametrize("weight_type", ["F32", "F16"])
def test_encoder_matches_numpy_reference(tmp_path, proj, weight_type):
    path = tm.write_tiny_mmproj(tmp_path / "mmproj.gguf", proj, weight_type=weight_type)
    vm = _core.VisionModel(path)
    enc = _core.VisionEncoder(vm, n_threads=2)
    assert (vm.projector, vm.n_tokens, vm.n_embd, vm.image_size) == (proj, tm.n_image_tokens(proj), 64, 32)
    for px in _images():
        got = enc.encode(px)
        want = tm.reference_embeddings(proj, px, weight_type=weight_type)
        assert got.shape == want.shape == (tm.n_image_tokens(proj), 64)
        assert _cos_rows(got, want).min() >= 0.9999
    # the reference tells images apart: a different image is far from the first one's rows
    a, b = (tm.reference_embeddings(proj, px, weight_type=weight_type) for px in _images(2))
    assert _cos_rows(enc.encode(_images(1)[0]), b).min() < 0.99


def test_f16_position_embeddings_are_cast(tmp_path):
    """A file with F16 position embeddings (llama.cpp's graph cannot add those) still encodes."""
    path = tm.write_tiny_mmproj(tmp_path / "m.gguf", "gemma3", weight_type="F16", keep_f32=())
    px = _images(1)[0]
    got = _core.VisionEncoder(_core.VisionModel(path), n_threads=2).encode(px)
    assert _cos_rows(got, tm.reference_embeddings("gemma3", px, weight_type="F16")).min() >= 0.9999


def test_metadata_is_read_from_the_file(tmp_path):
    path = tm.write_tiny_mmproj(tmp_path / "m.gguf", "mlp")
    vm = _core.VisionModel(path)
    assert vm.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert vm.image_std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert vm.metadata["clip.projector_type"] == "mlp"
    assert vm.size_bytes > 0 and vm.device


@pytest.mark.parametrize("change, message", [
    (dict(skip_tensors=("v.blk.1.attn_q.weight",)), "missing required tensor 'v.blk.1.attn_q.weight'"),
    (dict(skip_tensors=("mm.soft_emb_norm.weight",)), "mm.soft_emb_norm.weight"),
    (dict(tensor_overrides={"v.position_embd.weight": np.zeros((10, 32), np.float32)}), "v.position_embd.weight' has shape"),
    (dict(**{"clip.projector_type": "resampler"}), "unsupported projector type 'resampler'"),
    (dict(**{"clip.has_vision_encoder": False}), "not a vision projector"),
    (dict(**{"clip.vision.patch_size": 5}), "patch_size"),
    (dict(**{"clip.vision.projector.scale_factor": 3}), "scale_factor"),
    (dict(**{"clip.vision.projection_dim": 65}), "projection_dim"),
    (dict(**{"clip.vision.block_count": None}), "clip.vision.block_count"),
])
def test_bad_files_fail_to_load_naming_the_problem(tmp_path, change, message):
    path = tm.write_tiny_mmproj(tmp_path / "bad.gguf", "gemma3", **change)
    with pytest.raises(_core.ModelLoadError, match=message.replace("(", r"\(")) as e:
        _core.VisionModel(path)
    assert "bad.gguf" in str(e.value)


def test_truncated_file_fails_to_load(tmp_path):
    path = tm.write_tiny_mmproj(tmp_path / "t.gguf", "gemma3")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 1000])
    with pytest.raises(_core.ModelLoadError):
        _core.VisionModel(path)


def test_encode_checks_the_pixel_shape(tmp_path):
    enc = _core.VisionEncoder(_core.VisionModel(tm.write_tiny_mmproj(tmp_path / "m.gguf")), n_threads=1)
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        enc.encode(np.zeros((3, 16, 16), np.float32))


# ---- the text context takes embedding rows ---------------------------------------------------

@pytest.fixture(scope="module")
def gemma3_text(tmp_path_factory):
    return tiny_vlm.write_tiny_gemma3(tmp_path_factory.mktemp("vlm") / "gemma3.gguf")


def _decode(model, tokens, embd=None, attn_end=None, n_batch=512):
    ctx = _core.Context(model, n_ctx=256, n_batch=n_batch, n_seq_max=2, n_threads=2)
    n = len(tokens)
    out = ctx.decode(np.asarray(tokens, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                     np.ones(n, np.uint8), embd=embd, attn_end=attn_end)
    return np.array(out)


def test_embedding_rows_equal_their_tokens(gemma3_text):
    """Rows holding the (Gemma-scaled) token embeddings give the logits of the token ids."""
    m = _core.Model(gemma3_text)
    ref = ReferenceModel(gemma3_text)
    ids = [2, 10, 11, 12, 13, 14, 15]
    rows = ref.weights["token_embd.weight"][ids[2:5]] * np.float32(np.sqrt(m.n_embd))
    toks = ids[:2] + [-1, -1, -1] + ids[5:]
    np.testing.assert_allclose(_decode(m, toks, embd=rows), _decode(m, ids), rtol=0, atol=1e-5)


def _image_prompt(n_img: int):
    """BOS, 2 text tokens, an image of n_img rows, 3 text tokens; the image's (start, end)."""
    toks = [2, 20, 21] + [-1] * n_img + [22, 23, 24]
    return toks, (3, 3 + n_img)


def test_image_block_attends_bidirectionally(gemma3_text):
    m = _core.Model(gemma3_text)
    ref = ReferenceModel(gemma3_text)
    toks, (a, b) = _image_prompt(16)
    embd = np.random.default_rng(3).standard_normal((16, m.n_embd)).astype(np.float32)
    attn_end = np.arange(len(toks), dtype=np.int32)
    attn_end[a:b] = b - 1
    got = _decode(m, toks, embd=embd, attn_end=attn_end)
    want = ref.forward(toks, embd=embd, blocks=[(a, b)])
    causal = ref.forward(toks, embd=embd)
    assert _cos_rows(got, want).min() >= 0.9999
    # the mask matters: the causal reading differs on the image's first rows
    assert _cos_rows(want[a:a + 4], causal[a:a + 4]).min() < 0.999
    # a causal decode (no attn_end) matches the causal reference
    assert _cos_rows(_decode(m, toks, embd=embd), causal).min() >= 0.9999


def test_ubatch_cut_moves_before_an_image_block(gemma3_text):
    m = _core.Model(gemma3_text)
    toks, (a, b) = _image_prompt(16)
    embd = np.random.default_rng(4).standard_normal((16, m.n_embd)).astype(np.float32)
    attn_end = np.arange(len(toks), dtype=np.int32)
    attn_end[a:b] = b - 1
    whole = _decode(m, toks, embd=embd, attn_end=attn_end)
    # n_batch 17 would cut the block at entry 17: the core cuts at its start (entry 3) instead
    cut = _decode(m, toks, embd=embd, attn_end=attn_end, n_batch=17)
    assert _cos_rows(whole, cut).min() >= 0.99999
    with pytest.raises(ValueError, match="longer than n_batch"):
        _decode(m, toks, embd=embd, attn_end=attn_end, n_batch=8)


def test_bad_embedding_batches_are_refused(gemma3_text):
    m = _core.Model(gemma3_text)
    toks, _ = _image_prompt(4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _decode(m, toks)  # negative ids without rows
    with pytest.raises(ValueError, match=r"embd must be \(4, 64\)"):
        _decode(m, toks, embd=np.zeros((3, 64), np.float32))
    with pytest.raises(ValueError, match="attn_end"):
        _decode(m, toks, embd=np.zeros((4, 64), np.float32), attn_end=np.zeros(len(toks), np.int32))


def test_projector_embeddings_drive_the_text_model(tmp_path, gemma3_text):
    """End to end in the core: encoder output straight into the context, against the reference."""
    m = _core.Model(gemma3_text)
    enc = _core.VisionEncoder(_core.VisionModel(tm.write_tiny_mmproj(tmp_path / "p.gguf", "gemma3")), n_threads=2)
    embd = enc.encode(_images(1)[0])
    toks, (a, b) = _image_prompt(len(embd))
    attn_end = np.arange(len(toks), dtype=np.int32)
    attn_end[a:b] = b - 1
    got = _decode(m, toks, embd=embd, attn_end=attn_end)
    want = ReferenceModel(gemma3_text).forward(toks, embd=embd, blocks=[(a, b)])
    assert _cos_rows(got, want).min() >= 0.9999


def test_llava_mlp_embeddings_drive_a_llama_model(tmp_path):
    """LLaVA-style: the mlp projector's rows into a llama model, causal, against the reference."""
    import tiny_gguf

    text = tiny_gguf.write_tiny_llama(tmp_path / "llama.gguf")
    m = _core.Model(text)
    enc = _core.VisionEncoder(_core.VisionModel(tm.write_tiny_mmproj(tmp_path / "p.gguf", "mlp", n_embd_out=m.n_embd)),
                              n_threads=2)
    embd = enc.encode(_images(2)[1])
    toks = [1, 5, 6] + [-1] * len(embd) + [7, 8]
    got = _decode(m, toks, embd=embd)
    want = ReferenceModel(text).forward(toks, embd=embd)
    assert _cos_rows(got, want).min() >= 0.9999


def test_llm_places_llava_images_without_wrappers(tmp_path):
    import io

    from PIL import Image

    import lanner
    import tiny_gguf

    text = tiny_gguf.write_tiny_family(tmp_path / "llama3.gguf", "llama3")  # n_embd 64
    proj = tm.write_tiny_mmproj(tmp_path / "p.gguf", "mlp", n_embd_out=64)
    buf = io.BytesIO()
    Image.new("RGB", (30, 50), (5, 50, 150)).save(buf, "PNG")
    with lanner.LLM(text, mmproj=proj, n_ctx=256, n_threads=2) as llm:
        ids = llm.chat_tokens([{"role": "user", "content": "hi", "images": [buf.getvalue()]}])
        neg = [i for i, t in enumerate(ids) if t < 0]
        assert len(neg) == tm.n_image_tokens("mlp") and neg == list(range(neg[0], neg[0] + len(neg)))
        r = llm.chat([{"role": "user", "content": "hi", "images": [buf.getvalue()]}], max_tokens=3, temperature=0)
        assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens >= 1
        # a projector for another width is refused at load
    bad = tm.write_tiny_mmproj(tmp_path / "q.gguf", "mlp", n_embd_out=48)
    with pytest.raises(ValueError, match="not a pair"):
        lanner.LLM(text, mmproj=bad, n_ctx=64, n_threads=1)
