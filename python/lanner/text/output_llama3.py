"""Llama 3.x tool calls: a JSON object `{"name": ..., "parameters": {...}}` (or "arguments")
that opens the reply, or follows `<|python_tag|>`; several may follow one another, separated
by `;`. A leading `<think>` block (the R1-distilled Llamas) is reasoning.

Owns: Llama3Parser (JsonCallsParser with Llama's tag). Calls to built-in tools written as
Python after `<|python_tag|>` are not JSON: they stay content.
Must not: know any HTTP dialect, or raise on malformed output.
"""

from __future__ import annotations

from .output_generic import JsonCallsParser

PYTHON_TAG = "<|python_tag|>"


class Llama3Parser(JsonCallsParser):
    format = "llama3"
    think_tags = ("<think>", "</think>")
    call_tags = (PYTHON_TAG,)
    at_start = True
    tags = think_tags + call_tags
