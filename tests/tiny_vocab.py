"""Small real vocabularies for the tiny random-weight models, trained at test time on the corpus.

Owns: a Llama 3 style byte-level BPE (`llama-bpe`: Meta's published split regex, byte-level
mapping, ignore_merges, Llama 3's control tokens) trained with the `tokenizers` library, and
SentencePiece BPE vocabularies (llama-style: <unk> <s> </s>; Gemma-style: <pad> <eos> <bos> <unk>)
trained with the `sentencepiece` library; each as the GGUF `tokenizer.ggml.*` key/values.
Must not: use lanner's tokenizer code: these are the references lanner is compared against.
"""

from __future__ import annotations

import functools
import io
import json

import numpy as np

from data.tokenizer_corpus import CORPUS

# The split pattern of Meta Llama 3's tokenizer.json (pre_tokenizer Split, behavior Isolated).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"]
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]
GEMMA_SPECIALS = ["<start_of_turn>", "<end_of_turn>"]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


@functools.lru_cache(maxsize=None)
def llama3_hf_tokenizer_json(n_merges: int = 200) -> str:
    """tokenizer.json (a string) of a byte-level BPE trained on CORPUS, configured as Llama 3's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + n_merges, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    return tok.to_str()


def llama3_gguf_vocab() -> dict:
    """`tokenizer.ggml.*` key/values of the trained Llama 3 style vocabulary (model gpt2, pre llama-bpe)."""
    spec = json.loads(llama3_hf_tokenizer_json())
    vocab = spec["model"]["vocab"]  # str -> id
    tokens = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    types = [NORMAL] * len(tokens)
    for added in spec["added_tokens"]:
        if added["id"] >= len(tokens):
            tokens += [None] * (added["id"] + 1 - len(tokens))
            types += [NORMAL] * (added["id"] + 1 - len(types))
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL
    assert None not in tokens
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    ids = {t: i for i, t in enumerate(tokens)}
    return {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": ids["<|begin_of_text|>"],
        "tokenizer.ggml.eos_token_id": ids["<|end_of_text|>"],
        "tokenizer.ggml.eot_token_id": ids["<|eot_id|>"],
        "tokenizer.ggml.eom_token_id": ids["<|eom_id|>"],
        "tokenizer.ggml.add_bos_token": True,
    }


@functools.lru_cache(maxsize=None)
def _spm_model(style: str, vocab_size: int) -> bytes:
    import sentencepiece as spm

    ids = (dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1) if style == "llama"
           else dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3))
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in CORPUS if t.isascii()]), model_writer=out, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, num_threads=1, minloglevel=2,
        add_dummy_prefix=style == "llama", remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, **ids,
        control_symbols=PHI3_SPECIALS if style == "llama" else GEMMA_SPECIALS,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>" if style == "llama" else "<bos>",
        eos_piece="</s>" if style == "llama" else "<eos>")
    return out.getvalue()


def spm_gguf_vocab(style: str, vocab_size: int = 512) -> dict:
    """`tokenizer.ggml.*` key/values of a SentencePiece BPE trained on CORPUS's ASCII strings
    (other characters fall back to byte tokens).
    style "llama": <unk>=0 <s>=1 </s>=2, dummy prefix, Phi-3's chat tokens as control tokens;
    style "gemma": <pad>=0 <eos>=1 <bos>=2 <unk>=3, no dummy prefix, Gemma's turn tokens."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=_spm_model(style, vocab_size))
    n = sp.get_piece_size()
    tokens = [sp.id_to_piece(i) for i in range(n)]
    scores = np.array([sp.get_score(i) for i in range(n)], dtype=np.float32)
    types = np.array([UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i)
                      else BYTE if sp.is_byte(i) else NORMAL for i in range(n)], dtype=np.int32)
    meta = {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": style == "llama",
    }
    if style == "gemma":
        meta["tokenizer.ggml.padding_token_id"] = sp.pad_id()
        meta["tokenizer.ggml.eot_token_id"] = sp.piece_to_id("<end_of_turn>")
    else:
        meta["tokenizer.ggml.eot_token_id"] = sp.piece_to_id("<|end|>")
    return meta
