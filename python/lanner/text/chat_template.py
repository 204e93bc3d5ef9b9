"""Chat templates: messages -> prompt text, by the model's own Jinja template or a built-in one.

Owns: rendering GGUF `tokenizer.chat_template` in a sandboxed, immutable Jinja2 environment
configured the way Hugging Face renders templates (trim_blocks, lstrip_blocks, loop controls,
a non-escaping `tojson`, `raise_exception`, `strftime_now`, a pass-through `{% generation %}`),
and the built-in templates used when the file has none: Gemma turns, Llama 3 headers, Phi-3
tags (chosen by architecture or by the chat tokens the vocabulary has), else ChatML. Must not: tokenize, or
let a template reach Python internals - any failure or sandbox violation is a ChatTemplateError.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Optional, Sequence

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

GEMMA_ARCHS = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})


class ChatTemplateError(ValueError):
    """The chat template could not be compiled or rendered for these messages."""


class _TemplateRaised(TemplateError):
    """raise_exception(...) called by the template itself."""


# ---- built-in templates (written for lanner) -----------------------------------------------

# Gemma's documented turn format: BOS, then "<start_of_turn>{user|model}\n{text}<end_of_turn>\n"
# per message; a leading system message becomes the first turn's opening paragraph (a user
# turn of its own when nothing follows it);
# "<start_of_turn>model\n" asks for the reply. Message text is trimmed as Google's format does.
GEMMA_TEMPLATE = """\
{%- macro text(content) -%}
  {%- if content is string -%}{{ content | trim }}
  {%- elif content is iterable -%}
    {%- for part in content -%}
      {%- if part.type == 'text' -%}{{ part.text | trim }}
      {%- elif part.type == 'image' -%}{{ '<start_of_image>' }}
      {%- endif -%}
    {%- endfor -%}
  {%- elif content is not none -%}{{ raise_exception('message content must be text or a list of parts') }}
  {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set ns = namespace(prefix='', start=0) -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set ns.prefix = text(messages[0].content) + '\\n\\n' -%}
  {%- set ns.start = 1 -%}
{%- endif -%}
{%- for m in messages[ns.start:] -%}
  {%- if m.role == 'assistant' or m.role == 'model' -%}{%- set role = 'model' -%}
  {%- elif m.role == 'user' -%}{%- set role = 'user' -%}
  {%- else -%}{{ raise_exception("Gemma's chat format has no '" ~ m.role ~ "' role (only user and assistant, plus a leading system message)") }}
  {%- endif -%}
  {{- '<start_of_turn>' ~ role ~ '\\n' -}}
  {%- if loop.first -%}{{ ns.prefix }}{%- endif -%}
  {{- text(m.content) ~ '<end_of_turn>\\n' -}}
{%- else -%}
  {%- if ns.prefix -%}{{ '<start_of_turn>user\\n' ~ ns.prefix | trim ~ '<end_of_turn>\\n' }}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}
"""

# ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, "<|im_start|>assistant\n" to reply.
CHATML_TEMPLATE = """\
{%- for m in messages -%}
  {{- '<|im_start|>' ~ m.role ~ '\\n' -}}
  {%- if m.content is string -%}{{ m.content }}
  {%- elif m.content is iterable -%}
    {%- for part in m.content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
  {%- endif -%}
  {{- '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}
"""


# Llama 3's header format: BOS, then "<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"
# per message (any role: system, user, assistant, ipython, tool), text trimmed;
# "<|start_header_id|>assistant<|end_header_id|>\n\n" asks for the reply.
LLAMA3_TEMPLATE = """\
{%- macro text(content) -%}
  {%- if content is string -%}{{ content | trim }}
  {%- elif content is iterable -%}
    {%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text | trim }}{%- endif -%}{%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for m in messages -%}
  {{- '<|start_header_id|>' ~ m.role ~ '<|end_header_id|>\\n\\n' ~ text(m.content) ~ '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}
"""

# Phi-3's tag format: "<|{system|user|assistant}|>\n{text}<|end|>\n" per message, "<|assistant|>\n"
# asks for the reply (the tokenizer adds BOS). Other roles have no tag: refused.
PHI3_TEMPLATE = """\
{%- for m in messages -%}
  {%- if m.role not in ('system', 'user', 'assistant') -%}
    {{- raise_exception("Phi-3's chat format has no '" ~ m.role ~ "' role (only system, user and assistant)") -}}
  {%- endif -%}
  {{- '<|' ~ m.role ~ '|>\\n' -}}
  {%- if m.content is string -%}{{ m.content }}
  {%- elif m.content is iterable -%}
    {%- for part in m.content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
  {%- endif -%}
  {{- '<|end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}
"""


# Harmony (gpt-oss): "<|start|>{role}<|message|>{text}<|end|>" messages; a system message with
# the reasoning effort and the channels, a developer message with the instructions (the system
# messages' text) and the tools (JSON Schema per function), assistant replies in the `final`
# channel, tool calls in `commentary` addressed to=functions.NAME ending in <|call|>, tool
# results from functions.NAME to=assistant; "<|start|>assistant" asks for the reply.
HARMONY_TEMPLATE = """\
{%- macro text(content) -%}
  {%- if content is string -%}{{ content }}
  {%- elif content is iterable -%}
    {%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{{- '<|start|>system<|message|>Reasoning: ' ~ (reasoning_effort or 'medium') ~ '\\n\\n'
    ~ '# Valid channels: analysis, commentary, final. Channel must be included for every message.' -}}
{%- if tools -%}{{- '\\nCalls to these tools must go to the commentary channel: \\'functions\\'.' -}}{%- endif -%}
{{- '<|end|>' -}}
{%- set ns = namespace(instructions='') -%}
{%- for m in messages -%}
  {%- if m.role in ('system', 'developer') -%}{%- set ns.instructions = ns.instructions ~ text(m.content) ~ '\\n' -%}{%- endif -%}
{%- endfor -%}
{%- if ns.instructions or tools -%}
  {{- '<|start|>developer<|message|>' -}}
  {%- if ns.instructions -%}{{- '# Instructions\\n\\n' ~ ns.instructions | trim ~ '\\n\\n' -}}{%- endif -%}
  {%- if tools -%}
    {{- '# Tools\\n\\n## functions\\n\\nnamespace functions {\\n' -}}
    {%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}
      {{- '\\n// ' ~ (f.description or '') ~ '\\ntype ' ~ f.name ~ ' = (_: ' ~ (f.parameters or {}) | tojson ~ ') => any;\\n' -}}
    {%- endfor -%}
    {{- '\\n} // namespace functions' -}}
  {%- endif -%}
  {{- '<|end|>' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role == 'user' -%}{{- '<|start|>user<|message|>' ~ text(m.content) ~ '<|end|>' -}}
  {%- elif m.role == 'assistant' -%}
    {%- if m.content and text(m.content) -%}{{- '<|start|>assistant<|channel|>final<|message|>' ~ text(m.content) ~ '<|end|>' -}}{%- endif -%}
    {%- for c in m.tool_calls or [] -%}{%- set f = c.function if c.function is defined else c -%}
      {{- '<|start|>assistant<|channel|>commentary to=functions.' ~ f.name ~ ' <|constrain|>json<|message|>'
          ~ (f.arguments if f.arguments is string else (f.arguments or {}) | tojson) ~ '<|call|>' -}}
    {%- endfor -%}
  {%- elif m.role == 'tool' -%}
    {{- '<|start|>functions.' ~ (m.name or 'tool') ~ ' to=assistant<|channel|>commentary<|message|>' ~ text(m.content) ~ '<|end|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|start|>assistant' }}{%- endif -%}
"""


# ---- the Jinja environment -----------------------------------------------------------------

class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """json.dumps without HTML escaping and non-ASCII kept, as templates written for HF expect."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, but an unsafe attribute access fails at once.

    The stock sandbox returns an Undefined that only fails when used further, so
    `{{ x.__class__ }}` would print "" - we refuse the template instead.
    """

    def unsafe_undefined(self, obj: Any, attribute: str):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _environment() -> ImmutableSandboxedEnvironment:
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True,
                         extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


# ---- the template --------------------------------------------------------------------------

def _vocabulary_has(meta: dict, tokenizer: Any):
    """has(*texts): every text is a token of the vocabulary (the tokenizer's, else the metadata's)."""
    if tokenizer is not None and hasattr(tokenizer, "token_id"):
        return lambda *texts: all(tokenizer.token_id(t) is not None for t in texts)
    tokens = set(meta.get("tokenizer.ggml.tokens") or ())
    return lambda *texts: all(t in tokens for t in texts)


class ChatTemplate:
    """A compiled chat template plus the special-token texts it is rendered with."""

    def __init__(self, source: str, *, bos_token: Optional[str] = None, eos_token: Optional[str] = None,
                 name: str = "custom"):
        self.source = source
        self.name = name  # "file" (from the GGUF), "gemma", "harmony", "llama3", "phi3", "chatml" or "custom"
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _ENV.from_string(source)
        except TemplateSyntaxError as e:
            raise ChatTemplateError(f"chat template syntax error at line {e.lineno}: {e.message}") from None
        except TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from None

    @classmethod
    def from_metadata(cls, meta: dict, tokenizer: Any = None, name: Optional[str] = None) -> "ChatTemplate":
        """The file's `tokenizer.chat_template` (or `tokenizer.chat_template.<name>`), else a built-in:
        Gemma for architectures gemma/gemma2/gemma3; Harmony for gpt-oss (or a vocabulary with
        <|channel|>, <|message|>, <|call|>); Llama 3 headers for a vocabulary with
        <|start_header_id|> and <|eot_id|>; Phi-3 tags for architecture phi3 or a vocabulary with
        <|assistant|> and <|end|>; ChatML otherwise."""
        bos = getattr(tokenizer, "bos_text", None)
        eos = getattr(tokenizer, "eos_text", None)
        key = "tokenizer.chat_template" + (f".{name}" if name else "")
        source = meta.get(key)
        if isinstance(source, str) and source.strip():
            return cls(source, bos_token=bos, eos_token=eos, name="file")
        if name:
            raise ChatTemplateError(f"the model has no chat template named {name!r}")
        arch = meta.get("general.architecture")
        if arch in GEMMA_ARCHS:
            return cls(GEMMA_TEMPLATE, bos_token=bos, eos_token=eos, name="gemma")
        has = _vocabulary_has(meta, tokenizer)
        if arch == "gpt-oss" or has("<|channel|>", "<|message|>", "<|call|>"):
            return cls(HARMONY_TEMPLATE, bos_token=bos, eos_token=eos, name="harmony")
        if has("<|start_header_id|>", "<|eot_id|>"):
            return cls(LLAMA3_TEMPLATE, bos_token=bos, eos_token=eos, name="llama3")
        if arch == "phi3" or has("<|assistant|>", "<|end|>"):
            return cls(PHI3_TEMPLATE, bos_token=bos, eos_token=eos, name="phi3")
        return cls(CHATML_TEMPLATE, bos_token=bos, eos_token=eos, name="chatml")

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True,
               tools: Optional[list] = None, **kwargs: Any) -> str:
        """Prompt text for `messages` ([{"role", "content", ...}]); kwargs reach the template
        (e.g. enable_thinking=False) and may override bos_token / eos_token."""
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
            raise ChatTemplateError("messages must be a list of {'role': ..., 'content': ...} objects")
        variables = {"bos_token": self.bos_token or "", "eos_token": self.eos_token or ""}
        variables.update(kwargs)
        variables.update(messages=list(messages), add_generation_prompt=add_generation_prompt, tools=tools)
        try:
            return self._template.render(**variables)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"chat template rejected the request: {e.message}") from None
        except SecurityError as e:
            raise ChatTemplateError(f"chat template attempted an unsafe operation: {e}") from None
        except TemplateError as e:
            raise ChatTemplateError(f"chat template failed: {e}") from None
        except Exception as e:  # errors inside template expressions (TypeError, KeyError, ...)
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
