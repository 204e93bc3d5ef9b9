"""A second reference for SentencePiece vocabularies: the `sentencepiece` library itself.

Owns: rebuilding a SentencePiece BPE ModelProto from GGUF metadata (pieces, scores, types;
user-defined pieces get back the '▁' that llama.cpp's converter turned into ' ') so tests can
run the very library Gemma's tokenizer.model is executed by. Test-only; never used by lanner.
Must not: parse control tokens (SentencePiece never matches them in text).
"""

from __future__ import annotations

import numpy as np

SPACE = "\u2581"
# GGUF token type -> sentencepiece ModelProto.SentencePiece.Type (same numbering)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def build_spm_processor(meta: dict):
    """sentencepiece.SentencePieceProcessor running the GGUF vocabulary as a BPE model."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = meta["tokenizer.ggml.tokens"]
    scores = np.asarray(meta["tokenizer.ggml.scores"], dtype=np.float32)
    types = np.asarray(meta["tokenizer.ggml.token_type"], dtype=np.int32)
    proto = pb.ModelProto()
    for tok, score, typ in zip(tokens, scores.tolist(), types.tolist()):
        p = proto.pieces.add()
        p.piece = tok.replace(" ", SPACE) if typ == _USER_DEFINED else tok
        p.score = score
        p.type = typ if typ in (_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE) else _NORMAL
    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ts.unk_id = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    ts.bos_id = int(meta.get("tokenizer.ggml.bos_token_id", -1))
    ts.eos_id = int(meta.get("tokenizer.ggml.eos_token_id", -1))
    ts.pad_id = int(meta.get("tokenizer.ggml.padding_token_id", -1))
    ns = proto.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return sp
