"""Chat templates: the model's own template vs transformers, HF environment semantics, built-in
Gemma/Llama 3/Phi-3/ChatML fallbacks, errors and sandbox escapes."""

from __future__ import annotations

import datetime

import pytest

from lanner.text.chat_template import (CHATML_TEMPLATE, GEMMA_TEMPLATE, LLAMA3_TEMPLATE, PHI3_TEMPLATE,
                                       ChatTemplate, ChatTemplateError)
from reference_tokenizers import hf_tokenizer, lanner_tokenizer, metadata

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer in French."},
     {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Bonjour !"},
     {"role": "user", "content": "How are you?\nTell me  in detail."}],
    [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"},
     {"role": "user", "content": "third"}, {"role": "assistant", "content": "fourth"}],
    [{"role": "user", "content": "  spaces kept  \n\n and newlines \t"}],
    [{"role": "user", "content": "Unicode: 日本語, émoji 👨‍👩‍👧, <b>html</b> & \"quotes\""}],
    [{"role": "user", "content": ""}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_matches_transformers(messages, add_generation_prompt):
    ref = hf_tokenizer("smollm2")
    tmpl = ChatTemplate.from_metadata(metadata("smollm2"), lanner_tokenizer("smollm2"))
    assert tmpl.name == "file"
    expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert tmpl.render(messages, add_generation_prompt=add_generation_prompt) == expected


# Templates written for these tests that lean on what HF's renderer provides: trim_blocks /
# lstrip_blocks, loop controls, namespace, a non-escaping tojson with indent, raise_exception,
# {% generation %}, extra kwargs. Rendered by transformers with the same variables.
FEATURE_TEMPLATES = [
    # block whitespace handling: trim_blocks eats the newline after a tag, lstrip_blocks the indent
    """{% for m in messages %}
    {% if m.role == 'user' %}
  U: {{ m.content }}
    {% else %}
  A: {{ m.content }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}A:{% endif %}""",
    # tools as JSON (non-ASCII and <>& unescaped), indent and sort_keys options
    """{{ bos_token }}{% if tools %}Tools:
{% for t in tools %}{{ t | tojson(indent=2) }}
{{ t | tojson(sort_keys=True) }}
{% endfor %}{% endif %}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}""",
    # loop controls and namespace
    """{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"""
    """{% set ns.n = ns.n + 1 %}{{ ns.n }}:{{ m.content }};{% if ns.n >= 2 %}{% break %}{% endif %}{% endfor %}""",
    # generation block, kwargs, string methods, filters
    """{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content | upper }}{% endgeneration %}"""
    """{% else %}{{ m.content.strip() | replace('e', '3') }}{% endif %}|{% endfor %}"""
    """{{ 'think' if enable_thinking else 'nothink' }}{{ messages | length }}{{ messages[-1]['role'] }}""",
    # tool calls inside messages, tojson of nested dicts
    """{% for m in messages %}{% if m.tool_calls is defined %}{% for c in m.tool_calls %}"""
    """<call>{{ c.function | tojson }}</call>{% endfor %}{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}""",
]

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter für <Ort> & Zeit",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
TOOL_MESSAGES = CONVERSATIONS[2] + [
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]}]


@pytest.mark.parametrize("source", FEATURE_TEMPLATES)
@pytest.mark.parametrize("messages", [CONVERSATIONS[2], TOOL_MESSAGES])
def test_environment_matches_transformers(source, messages):
    ref = hf_tokenizer("smollm2")
    kwargs = dict(bos_token="<s>", eos_token="</s>", enable_thinking=False)
    expected = ref.apply_chat_template(messages, chat_template=source, tools=TOOLS, tokenize=False,
                                       add_generation_prompt=True, **kwargs)
    assert ChatTemplate(source).render(messages, add_generation_prompt=True, tools=TOOLS, **kwargs) == expected


def test_strftime_now():
    out = ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert out in {str(datetime.date.today().year), str(datetime.date.today().year + 1)}


# ---- built-in fallbacks ----------------------------------------------------------------------

def test_gemma_fallback_chosen_for_gemma3():
    meta = metadata("gemma3")
    assert "tokenizer.chat_template" not in meta
    tmpl = ChatTemplate.from_metadata(meta, lanner_tokenizer("gemma3"))
    assert tmpl.name == "gemma" and tmpl.bos_token == "<bos>"


def test_gemma_fallback_documented_format():
    """The multi-turn example of Google's Gemma prompt-format documentation, plus BOS."""
    tmpl = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>")
    messages = [{"role": "user", "content": "knock knock"}, {"role": "assistant", "content": "who is there"},
                {"role": "user", "content": "Gemma"}, {"role": "assistant", "content": "Gemma who?"}]
    assert tmpl.render(messages, add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nknock knock<end_of_turn>\n"
        "<start_of_turn>model\nwho is there<end_of_turn>\n"
        "<start_of_turn>user\nGemma<end_of_turn>\n"
        "<start_of_turn>model\nGemma who?<end_of_turn>\n")
    assert tmpl.render(messages[:1]) == "<bos><start_of_turn>user\nknock knock<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_fallback_folds_system_into_first_user_turn():
    tmpl = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>")
    out = tmpl.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "}])
    assert out == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    alone = tmpl.render([{"role": "system", "content": "Be brief."}])
    assert alone == "<bos><start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"
    parts = tmpl.render([{"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}],
                        add_generation_prompt=False)
    assert parts == "<bos><start_of_turn>user\nab<end_of_turn>\n"


def test_gemma_fallback_tokenizes_to_one_bos_and_turn_tokens():
    tok = lanner_tokenizer("gemma3")
    tmpl = ChatTemplate.from_metadata(metadata("gemma3"), tok)
    ids = tok.encode(tmpl.render([{"role": "user", "content": "Hi"}]), parse_special=True)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids.count(tok.token_id("<start_of_turn>")) == 2 and ids.count(tok.token_id("<end_of_turn>")) == 1


def test_gemma_fallback_rejects_unknown_roles():
    with pytest.raises(ChatTemplateError, match="tool"):
        ChatTemplate(GEMMA_TEMPLATE).render([{"role": "tool", "content": "42"}])


def test_chatml_fallback_for_other_architectures():
    meta = {"general.architecture": "llama"}
    tmpl = ChatTemplate.from_metadata(meta, lanner_tokenizer("smollm2"))
    assert tmpl.name == "chatml" and tmpl.source == CHATML_TEMPLATE
    out = tmpl.render([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tmpl.render([{"role": "user", "content": "x"}], add_generation_prompt=False) == \
        "<|im_start|>user\nx<|im_end|>\n"


def _tiny_family_vocab(family: str):
    """(metadata, tokenizer) of a tiny family model's vocabulary (tests/tiny_vocab.py)."""
    from lanner.text.tokenizer import Tokenizer
    from tiny_gguf import family_vocab

    meta = dict(family_vocab(family), **{"general.architecture": "llama" if family == "llama3" else family})
    return meta, Tokenizer.from_metadata(meta)


def test_llama3_fallback_documented_format():
    """Meta's Llama 3 prompt format: BOS, a header per message, text trimmed, <|eot_id|> after each."""
    meta, tok = _tiny_family_vocab("llama3")
    tmpl = ChatTemplate.from_metadata(meta, tok)
    assert tmpl.name == "llama3" and tmpl.source == LLAMA3_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi \n"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]
    assert tmpl.render(messages) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    tool = tmpl.render([{"role": "ipython", "content": "42"}], add_generation_prompt=False)
    assert tool == "<|begin_of_text|><|start_header_id|>ipython<|end_header_id|>\n\n42<|eot_id|>"
    # chosen by the vocabulary, also without a tokenizer object
    assert ChatTemplate.from_metadata(meta).name == "llama3"
    ids = tok.encode(tmpl.render(messages[:2]), parse_special=True)
    assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id
    assert ids.count(tok.token_id("<|eot_id|>")) == 2 and tok.is_eog(tok.token_id("<|eot_id|>"))


def test_phi3_fallback_documented_format():
    """Microsoft's Phi-3 format: <|role|>\n{text}<|end|>\n per message, <|assistant|>\n to reply."""
    meta, tok = _tiny_family_vocab("phi3")
    tmpl = ChatTemplate.from_metadata(meta, tok)
    assert tmpl.name == "phi3" and tmpl.source == PHI3_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert tmpl.render(messages) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n"
        "<|user|>\nBye<|end|>\n<|assistant|>\n")
    assert tmpl.render(messages[1:2], add_generation_prompt=False) == "<|user|>\nHi<|end|>\n"
    with pytest.raises(ChatTemplateError, match="tool"):
        tmpl.render([{"role": "tool", "content": "42"}])
    # by vocabulary too (a phi3-vocabulary model of another architecture)
    assert ChatTemplate.from_metadata(dict(meta, **{"general.architecture": "llama"}), tok).name == "phi3"
    ids = tok.encode(tmpl.render(messages[1:2]), parse_special=True)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1  # the tokenizer adds BOS
    assert tok.token_id("<|user|>") in ids and tok.is_eog(tok.token_id("<|end|>"))


def test_gemma_fallback_for_gemma2():
    meta, tok = _tiny_family_vocab("gemma2")
    tmpl = ChatTemplate.from_metadata(meta, tok)
    assert tmpl.name == "gemma" and tmpl.bos_token == "<bos>"
    assert tok.is_eog(tok.token_id("<end_of_turn>")) and tok.is_eog(tok.eos_id)


def test_named_template_missing():
    with pytest.raises(ChatTemplateError, match="tool_use"):
        ChatTemplate.from_metadata(metadata("smollm2"), None, name="tool_use")


# ---- errors and the sandbox ------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ raise_exception.__globals__ }}",
    "{{ messages.__class__.__base__ }}",
    "{% set x = messages.append({'role': 'x'}) %}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{{ self.__init__.__globals__ }}",
])
def test_sandbox_escapes_are_refused(source):
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_template_raise_exception_message():
    src = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="first message must be from the user"):
        ChatTemplate(src).render([{"role": "assistant", "content": "x"}])


def test_syntax_and_runtime_errors():
    with pytest.raises(ChatTemplateError, match="syntax error at line 2"):
        ChatTemplate("ok\n{% for x in %}")
    with pytest.raises(ChatTemplateError, match="ZeroDivisionError"):
        ChatTemplate("{{ 1 / 0 }}").render([])
    with pytest.raises(ChatTemplateError, match="Range too big"):
        ChatTemplate("{% for i in range(10**9) %}{% endfor %}").render([])
    with pytest.raises(ChatTemplateError, match="messages"):
        ChatTemplate("x").render("not a list")
