"""The pre-tokenizers `qwen2` (Qwen2/2.5/3) and `gpt-4o` (o200k: gpt-oss) on the tokenizer corpus.

No real vocabulary of these families ships on PyPI, so each test file carries a byte-level BPE
trained with the `tokenizers` library on the corpus through the family's own pre-tokenizer
(tests/tiny_gguf.py). References: transformers' GGUF loader for the qwen files (its Qwen2
converter builds the tokenizer from the GGUF: NFC + the Qwen2 split regex), and for gpt-4o
(transformers has no gpt-oss GGUF loader) a `tokenizers` pipeline built as gpt-oss'
tokenizer.json defines it. llama.cpp's own tokenization of the same files is compared by
tests/reference/check_families_llama_cpp.py (tests/reference/README.md).
"""

from __future__ import annotations

import pytest
from data.tokenizer_corpus import CORPUS
from gguf_metadata import read_metadata
from lanner.text.tokenizer import Tokenizer
from tiny_gguf import family_pre, arch_vocab, hf_reference_tokenizer, write_tiny_arch


@pytest.mark.parametrize("arch", ["qwen3", "gpt-oss"])
def test_pretokenizer_matches_hf_definition(tmp_path, arch):
    ours = Tokenizer.from_metadata(read_metadata(write_tiny_arch(tmp_path / "m.gguf", arch)))
    tokens, _types, merges = arch_vocab(arch)
    ref = hf_reference_tokenizer(family_pre(arch), tokens, merges)
    bad = [t for t in CORPUS
           if ours.encode(t, add_special=False) != ref.encode(t, add_special_tokens=False).ids]
    assert not bad, bad[:5]
    # the trained merges are used: far fewer tokens than bytes
    n_bytes = sum(len(t.encode()) for t in CORPUS)
    assert sum(len(ours.encode(t, add_special=False)) for t in CORPUS) < 0.8 * n_bytes


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2", "qwen3moe"])
def test_qwen_matches_transformers_gguf_loader(tmp_path, arch):
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    path = write_tiny_arch(tmp_path / "m.gguf", arch)
    ours = Tokenizer.from_metadata(read_metadata(path))
    saved = gguf_utils.is_torch_available  # its tokenizer path never touches torch
    gguf_utils.is_torch_available = lambda: True
    try:
        ref = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    finally:
        gguf_utils.is_torch_available = saved
    assert gguf  # the reader transformers uses
    # (its GGUF converter registers only control tokens as added tokens, so user-defined ones
    # like <think> are left out here: we, like llama.cpp and Qwen's tokenizer.json, match them)
    texts = CORPUS + ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
    bad = [t for t in texts if ours.encode(t, add_special=False, parse_special=True)
           != ref(t, add_special_tokens=False)["input_ids"]]
    assert not bad, bad[:5]


def test_gpt4o_splits_case_runs_and_contractions():
    from lanner.text.pretokenizer import build_pretokenizer

    def words(pre):
        return [w for w, _ in build_pretokenizer(pre).pre_tokenizer.pre_tokenize_str(
            "HelloWorld don't 12345 a/b ?!\n/")]

    # o200k: letter runs split where case turns, a contraction stays with its word, digits in
    # threes, punctuation keeps trailing newlines and slashes
    assert words("gpt-4o") == ["Hello", "World", "Ġdon't", "Ġ", "123", "45", "Ġa", "/b", "Ġ?!Ċ/"]
    assert words("qwen2") == ["HelloWorld", "Ġdon", "'t", "Ġ", "1", "2", "3", "4", "5", "Ġa", "/b",
                              "Ġ?!Ċ", "/"]
