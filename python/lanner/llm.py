"""LLM: the public Python entry point — load a GGUF model, tokenize, generate, chat.

Owns: one native model, its tokenizer and chat template, and one Engine (the model thread with
continuous batching and the prefix cache). Every generation goes through the engine, so direct
Python calls and the server share one code path. Must not: speak any HTTP dialect.

    llm = lanner.LLM()                       # the embedded default model (SmolLM2)
    llm.generate("The capital of France is", max_tokens=8, temperature=0).text
    for chunk in llm.chat([{"role": "user", "content": "Hi"}], stream=True): print(chunk.text, end="")
    vlm = lanner.LLM("gemma-3-4b.gguf", mmproj="mmproj-gemma-3-4b.gguf")
    vlm.chat([{"role": "user", "content": "What is this?", "images": [open("cat.png", "rb").read()]}])
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from .text.chat_fence import encode_chat
from .text.chat_template import ChatTemplate
from .default_model import default_model_path
from .engine import Engine
from .engine.thread_tuner import tuner_for
from .heap import release_free_heap
from .text.tokenizer import Tokenizer
from .types import (FinishEvent, FinishReason, GenerateRequest, Grammar, PromptIds, SamplingParams,
                    Timings, Usage)

# general.file_type -> the name people know the quantization by
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


# GGUF keys LLM.gguf_metadata leaves out: the tokenizer holds them (compactly)
_TOKENIZER_TABLES = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                               "tokenizer.ggml.token_type", "tokenizer.ggml.merges"})


@dataclass
class Completion:
    """A finished generation. Durations in timings are nanoseconds."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" (an engine failure raises RuntimeError instead)
    usage: Usage
    timings: Timings

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token (tokens / s)."""
        n = self.usage.completion_tokens - 1
        return n / (self.timings.eval_ns / 1e9) if n > 0 and self.timings.eval_ns > 0 else 0.0


@dataclass
class CompletionChunk:
    """One streamed piece: text released now and the token(s) behind it; the last chunk carries
    finish_reason, usage and timings."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    usage: Optional[Usage] = None
    timings: Optional[Timings] = None


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


class LLM:
    """A loaded model with its engine.

    model_path: a GGUF file; None = $LANNER_MODEL or the embedded SmolLM2.
    n_ctx: KV cache size in tokens, shared by all sequences (capped at the model's training length).
    n_threads: CPU threads for the matmuls. Default: the CPUs this process may use, or fewer
      while fewer are faster (engine/thread_tuner.py: other processes on the cores); a number
      given here is kept as it is.
    n_parallel: sequences decoded together by the engine; max_queue: requests allowed to wait.
    type_k / type_v: KV cache cell types ("f16", "f32", "q8_0").
    flash_attn: True (default) attention by ggml's flash-attention kernel; False uses softmax(KQ)V,
    ~15% faster decode on the CPU for small models, whose rounding depends on where a sequence's
    cells lie (so no batch invariance).
    batch_invariant: True (default; CPU, with flash_attn) makes a request's logits, and so its
    greedy or seeded tokens, independent of the prefix cache, batch neighbours, prompt chunking,
    cell placement and thread count, bit for bit; False lets ggml pick faster shape-dependent
    attention kernels (prefill of long prompts ~10-15% faster, see bench/README.md).
    repack: store Q4_0/Q4_K/... weights in ggml's CPU repacking layout: faster prompt processing,
    but batched rows then round differently from single rows (logits depend on batch neighbours).
    backend: "auto" (a GPU if ggml has one, else the CPU), "cpu", "cuda" or "metal"; ValueError
    if this build lacks it. `backend_name` says which one the model runs on.
    mmproj: a vision projector GGUF (llama.cpp's mmproj layout) for this model: messages may then
    carry images (bytes, file paths or PIL images): in "images" (placed before the message's
    text) or as {"type": "image", "image": x} parts of a content list (placed where they stand).
    image_limits: lanner.vision.image.ImageLimits for images given to chat().
    """

    def __init__(self, model_path: Union[str, Path, None] = None, n_ctx: int = 4096,
                 n_threads: Optional[int] = None, n_batch: int = 512, n_parallel: int = 4,
                 max_queue: int = 64, type_k: str = "f16", type_v: str = "f16",
                 flash_attn: bool = True, repack: bool = False, backend: str = "auto",
                 batch_invariant: bool = True, mmproj: Union[str, Path, None] = None,
                 image_limits: Any = None):
        from . import _core
        from .backends import backend_of, device_for, list_devices

        t0 = time.perf_counter_ns()
        self.model_path = str(model_path or default_model_path())
        devices = list_devices()
        self.model = _core.Model(self.model_path, repack=repack, device=device_for(backend, devices))
        self.backend_name = next((backend_of(d) for d in devices if d["name"] == self.model.device),
                                 self.model.device.lower())
        meta = self.model.metadata
        self.tokenizer = Tokenizer.from_metadata(meta)
        self.chat_template = ChatTemplate.from_metadata(meta, self.tokenizer)
        # the file's keys without the vocabulary tables (262k Python strings for Gemma 3: ~25
        # MiB); self.tokenizer answers for tokens, their types and texts
        self.gguf_metadata: dict[str, Any] = {k: v for k, v in meta.items() if k not in _TOKENIZER_TABLES}
        del meta
        # the native copy of those tables too (~13 MiB of strings for Gemma 3's 262k tokens)
        self.model.drop_metadata(sorted(_TOKENIZER_TABLES))
        self.n_ctx = max(16, min(int(n_ctx), self.model.n_ctx_train))
        self.n_threads = int(n_threads or _default_threads())
        ctx = _core.Context(self.model, n_ctx=self.n_ctx, n_batch=n_batch,
                            n_seq_max=max(16, n_parallel * 2), n_threads=self.n_threads,
                            type_k=type_k, type_v=type_v, flash_attn=flash_attn,
                            batch_invariant=batch_invariant)
        self.vision = self._load_vision(mmproj, image_limits)
        # threads not pinned by the caller: the engine picks the count by measured step times
        tuner = tuner_for(ctx, self.n_threads) if not n_threads and self.backend_name == "cpu" else None
        self.engine = Engine(ctx, self.tokenizer, n_parallel=n_parallel, max_queue=max_queue,
                             step_token_budget=n_batch, n_vocab=self.model.n_vocab,
                             bidirectional_images=bool(self.vision and self.vision.bidirectional),
                             thread_tuner=tuner)
        self.model_name = Path(self.model_path).stem
        self.load_duration_ns = time.perf_counter_ns() - t0
        self.metadata = self._describe(ctx)
        release_free_heap()  # what loading freed (the tokenizer's build tables) goes back to the OS

    def _load_vision(self, mmproj, image_limits):
        if mmproj is None:
            return None
        from .vision.encoder import ImageEncoder
        from .vision.image import ImageLimits

        enc = ImageEncoder(str(mmproj), device=self.model.device, n_threads=self.n_threads)
        if enc.n_embd != self.model.n_embd:
            raise ValueError(f"the vision projector {mmproj} makes {enc.n_embd}-wide embeddings but "
                             f"the model's n_embd is {self.model.n_embd}: they are not a pair")
        self.image_limits = image_limits or ImageLimits()
        return enc

    @property
    def supports_images(self) -> bool:
        """Whether chat messages may carry images (a vision projector is loaded)."""
        return self.vision is not None

    def _describe(self, ctx) -> dict[str, Any]:
        g, tok = self.gguf_metadata, self.tokenizer
        ftype = g.get("general.file_type")
        return {
            "architecture": self.model.arch,
            "name": g.get("general.name") or self.model_name,
            "context_length": self.model.n_ctx_train,
            "n_ctx": self.n_ctx,
            "n_vocab": self.model.n_vocab,
            "max_token_bytes": tok.max_token_bytes,  # a text of n chars has >= n / this tokens
            "vocab_size": self.model.n_vocab,
            "n_embd": self.model.n_embd,
            "n_layer": self.model.n_layer,
            "n_head": self.model.n_head,
            "n_head_kv": self.model.n_head_kv,
            "n_params": self.model.n_params,
            "size_bytes": self.model.size_bytes,
            "file_type": ftype,
            "quantization": _FILE_TYPES.get(ftype, f"type {ftype}") if ftype is not None else None,
            "tokenizer_model": tok.model,
            "chat_template": self.chat_template.source,
            "chat_template_origin": self.chat_template.name,
            "bos_token": tok.bos_text, "bos_token_id": tok.bos_id,
            "eos_token": tok.eos_text, "eos_token_id": tok.eos_id,
            "eog_token_ids": sorted(tok.eog_ids),
            "add_bos_token": tok.add_bos,
            "device": self.model.device,
            "backend": self.backend_name,
            "n_threads": self.n_threads,
            "kv_types": (ctx.type_k, ctx.type_v),
            "vision": None if self.vision is None else {
                "projector": self.vision.projector, "path": self.vision.path,
                "image_size": self.vision.spec.image_size, "tokens_per_image": self.vision.n_tokens},
        }

    # ---- text ---------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special=skip_special)

    def render_chat(self, messages: Sequence[dict], tools: Optional[list] = None,
                    add_generation_prompt: bool = True, **template_kwargs: Any) -> str:
        """The chat template applied to messages (text, special tokens as text)."""
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt,
                                         tools=tools, **template_kwargs)

    def chat_tokens(self, messages: Sequence[dict], tools: Optional[list] = None,
                    add_generation_prompt: bool = True, **template_kwargs: Any) -> list[int]:
        """Token ids of the rendered chat: the template's markers parsed as special tokens, the
        messages' text always as plain text (a user who types `<|im_end|>` gets those
        characters, not the control token), BOS added once. Images (a message's `images`, or
        `{"type": "image", "image": x}` parts of a content list) make it a PromptIds."""
        from .vision.placement import has_images

        if any(has_images(m) for m in messages):
            return self._chat_tokens_images(messages, tools, add_generation_prompt, template_kwargs)
        return encode_chat(self.tokenizer, lambda ms, ts=None: self.render_chat(
            ms, ts, add_generation_prompt, **template_kwargs), messages, tools)

    def _chat_tokens_images(self, messages, tools, add_generation_prompt, template_kwargs) -> PromptIds:
        """chat_tokens for messages with images: each image's slot marked at its place in its
        message's text (vision/placement.py), the rendered chat tokenized around the slots, each
        slot filled with the image's tokens (ids keyed by its pixels), the embeddings carried
        along (PromptIds.images)."""
        from .vision.placement import mark_messages, slot_markers

        self._need_vision()
        slots = slot_markers()
        marked, images = mark_messages(messages, slots)
        self._check_count(len(images))
        ids = encode_chat(self.tokenizer, lambda ms, ts=None: self.render_chat(
            ms, ts, add_generation_prompt, **template_kwargs), marked, tools, slots=slots.pattern)
        return self._fill_slots(ids, images)

    def raw_tokens(self, parts: Sequence[Any], add_special: bool = True) -> PromptIds:
        """Token ids of a raw prompt (no template) given as text and images in order: each str
        tokenized with special tokens parsed, each `{"type": "image", "image": x}` (or a bare
        image) as the image's tokens; BOS added once at the start (add_special)."""
        self._need_vision()
        ids: list[int] = []
        images: list = []
        for p in parts:
            if isinstance(p, str):
                ids += self.tokenizer.encode(p, add_special=False, parse_special=True)
            else:
                images.append(p.get("image") if isinstance(p, dict) else p)
                ids.append(-len(images))  # the slot placeholder of image k: -(k+1)
        self._check_count(len(images))
        if add_special:
            ids = self.tokenizer.add_specials(ids)
        return self._fill_slots(ids, images)

    def _need_vision(self) -> None:
        if self.vision is None:
            raise ValueError("this model does not support images: no vision projector (mmproj) is loaded")

    def _check_count(self, n: int) -> None:
        if n > self.image_limits.max_images:
            raise ValueError(f"{n} images in one request, over the limit of {self.image_limits.max_images}")

    def _fill_slots(self, ids: list[int], images: list) -> PromptIds:
        """ids with each slot -(k+1) replaced by image k's tokens, its embeddings carried along."""
        from .vision.placement import expand, wrapper_ids

        embedded = [self.vision.embed(self._image(x)) for x in images]
        before, after = wrapper_ids(self.vision.projector, self.tokenizer)
        prompt = expand(ids, [(k, len(rows)) for k, rows in embedded], before, after)
        return PromptIds(prompt, {k: rows for k, rows in embedded})

    def _image(self, x):
        """An image given to chat(): PIL image, encoded bytes, or a file path -> RGB image."""
        from .vision.image import decode_image

        if hasattr(x, "convert") and hasattr(x, "size"):
            return x.convert("RGB")
        if isinstance(x, (bytes, bytearray, memoryview)):
            return decode_image(bytes(x), self.image_limits)
        return decode_image(Path(x).read_bytes(), self.image_limits)

    # ---- generation ---------------------------------------------------------------------------

    def _request(self, prompt_tokens: list[int], max_tokens: int, stop, ignore_eos: bool,
                 sampling: dict[str, Any], grammar: Optional[Grammar] = None) -> GenerateRequest:
        params = SamplingParams(**{k: v for k, v in sampling.items() if v is not None})
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return GenerateRequest(prompt_tokens=prompt_tokens, max_tokens=int(max_tokens),
                               sampling=params, stop=stops, ignore_eos=ignore_eos, grammar=grammar)

    def generate(self, prompt: Union[str, Sequence[int]], max_tokens: int = 256, *,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repeat_penalty: Optional[float] = None, presence_penalty: Optional[float] = None,
                 frequency_penalty: Optional[float] = None, seed: Optional[int] = None,
                 stop: Union[str, Sequence[str], None] = None, ignore_eos: bool = False,
                 logprobs: Optional[int] = None, parse_special: bool = True,
                 grammar: Optional[Grammar] = None,
                 stream: bool = False) -> Union[Completion, Iterator[CompletionChunk]]:
        """Continue `prompt`. A str is tokenized (BOS added if the model wants it, special tokens
        written as text are parsed unless parse_special=False); a list of ids is used as given.
        Sampling options default to SamplingParams' defaults; temperature=0 is greedy.
        grammar: constrain the output, e.g. Grammar.json_schema({...}); one that does not compile
        raises lanner.types.ValidationError before anything runs."""
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, add_special=True, parse_special=parse_special)
        else:  # image spans' embeddings ride along (PromptIds from chat_tokens)
            ids = PromptIds([int(t) for t in prompt], getattr(prompt, "images", None))
        req = self._request(ids, max_tokens, stop, ignore_eos, dict(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, seed=seed, logprobs=logprobs), grammar)
        return self._stream(req) if stream else self._collect(req)

    def chat(self, messages: Sequence[dict], max_tokens: int = 256, *, tools: Optional[list] = None,
             stream: bool = False, template_kwargs: Optional[dict] = None, **options: Any):
        """Generate the assistant's reply to `messages` with the model's chat template.
        options: the sampling/stop options of generate()."""
        ids = self.chat_tokens(messages, tools=tools, **(template_kwargs or {}))
        return self.generate(ids, max_tokens, stream=stream, **options)

    def _collect(self, req: GenerateRequest) -> Completion:
        texts, ids = [], []
        for chunk in self._stream(req):
            texts.append(chunk.text)
            ids += chunk.token_ids
            if chunk.finish_reason is not None:
                return Completion("".join(texts), ids, chunk.finish_reason, chunk.usage, chunk.timings)
        raise RuntimeError("the engine ended a stream without a finish event")

    def _stream(self, req: GenerateRequest) -> Iterator[CompletionChunk]:
        stream = self.engine.submit(req)
        try:
            for ev in stream:
                if isinstance(ev, FinishEvent):
                    if ev.reason is FinishReason.ERROR:
                        raise RuntimeError(f"generation failed: {ev.error}")
                    last = CompletionChunk(ev.text, [], ev.reason.value, ev.usage, ev.timings)
                    yield last
                    return
                yield CompletionChunk(ev.text, [ev.token_id])
        finally:
            stream.close()  # a consumer that stops early aborts the request

    # ---- lifetime -----------------------------------------------------------------------------

    def warm_grammar(self) -> None:
        """Build the grammar compiler's view of the vocabulary now (the server does this while
        loading, so the first structured request is not the one that waits for it)."""
        self.engine.grammar.warm()
        release_free_heap()  # the build's temporary token lists

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
