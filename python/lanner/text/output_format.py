"""Which output format a model writes, from its architecture, chat template and vocabulary.

Owns: choose_format (-> a parser class of output_<format>.py) and the rule order: Harmony
(gpt-oss), Mistral ([TOOL_CALLS]), Hermes/Qwen (<tool_call>, <think>, ChatML), Llama 3
(<|python_tag|>, header tokens), else the generic JSON-call parser.
Must not: parse output itself, or know any HTTP dialect.
"""

from __future__ import annotations

from typing import Callable, Optional

from .output_generic import JsonCallsParser
from .output_harmony import HarmonyParser
from .output_hermes import HermesParser
from .output_llama3 import Llama3Parser
from .output_mistral import MistralParser
from .output_parse import OutputParser

PARSERS: dict[str, type[OutputParser]] = {
    "harmony": HarmonyParser, "mistral": MistralParser, "hermes": HermesParser,
    "llama3": Llama3Parser, "generic": JsonCallsParser}

_HERMES_ARCHS = frozenset({"qwen2", "qwen2moe", "qwen3", "qwen3moe"})


def choose_format(arch: str, template: str, has_token: Optional[Callable[[str], bool]] = None) -> str:
    """The output format name (a key of PARSERS) for a model."""
    has = has_token or (lambda t: False)
    template = template or ""
    if arch == "gpt-oss" or "<|channel|>" in template or has("<|channel|>"):
        return "harmony"
    if "[TOOL_CALLS]" in template or has("[TOOL_CALLS]"):
        return "mistral"
    if arch in _HERMES_ARCHS or "<tool_call>" in template or "<think>" in template \
            or "<|im_start|>" in template:
        return "hermes"
    if "<|python_tag|>" in template or "<|start_header_id|>" in template or has("<|eot_id|>"):
        return "llama3"
    return "generic"
