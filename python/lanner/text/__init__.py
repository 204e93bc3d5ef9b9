"""Text layer: tokenizers (SentencePiece, GPT-2 BPE, pre-tokenizers, token types), the chat
template, the incremental detokenizer. Pure Python over the Rust `tokenizers` library and Jinja;
knows no engine, HTTP or native core."""
