"""Grammar-constrained decoding without a real model: the static limits, the Sampler's mask hook,
the compiler and matcher over a byte vocabulary, and the engine (fake core, hashed logits)
producing schema-valid JSON for every seed while the logits themselves are noise."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fake_backend import ByteVocab
from fake_core import FakeContext, FakeModel
from lanner.engine import Engine
from lanner.engine.grammar import GrammarCompiler
from lanner.engine.grammar_limits import (MAX_SCHEMA_DEPTH, check_regex, check_schema, json_depth,
                                          nested_repeat)
from lanner.engine.sampling import Sampler
from lanner.types import FinishEvent, FinishReason, GenerateRequest, Grammar, SamplingParams, ValidationError

jsonschema = pytest.importorskip("jsonschema")


# ---- static limits ----

def test_nested_repeat():
    assert nested_repeat("^[0-9]{5}$") == 5
    assert nested_repeat("(a{10}){20}") == 200
    assert nested_repeat("a{10}b{20}") == 20
    assert nested_repeat("((a{10}){10}){10}") == 1000
    assert nested_repeat(r"\d{3}-\d{4}") == 4
    assert nested_repeat("[{]{1000}") == 1000          # a brace inside a class is a character
    assert nested_repeat("(a+)+$") == 1
    assert nested_repeat("x{,5}") == 1                  # not a counted repetition: literal text
    with pytest.raises(ValidationError, match="nests counted repetitions"):
        check_regex("^(a{1000}){1000}$")
    check_regex("^(a{100}){100}$")


def test_json_depth_iterative():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == 100_001
    assert json_depth({"a": [1, {"b": {}}]}) == 4
    assert json_depth(3) == 0


def test_check_schema_limits():
    s: dict = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        s = {"type": "array", "items": s}
    with pytest.raises(ValidationError, match="nests"):
        check_schema(s, 100)
    many = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(1001)}}
    with pytest.raises(ValidationError, match="1001 properties"):
        check_schema(many, 100)
    with pytest.raises(ValidationError, match="must be an object"):
        check_schema([1], 3)


# ---- the Sampler's mask hook ----

def test_sampler_respects_allowed_ids():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000).astype(np.float32)
    before = logits.copy()
    allowed = np.array([3, 500, 999])
    assert Sampler(SamplingParams()).sample(logits, (), allowed) == int(allowed[np.argmax(logits[allowed])])
    s = Sampler(SamplingParams(temperature=1.0, seed=1, top_k=50))  # top_k over the masked row
    draws = {s.sample(logits, (), allowed) for _ in range(300)}
    assert draws <= set(allowed.tolist()) and len(draws) > 1
    biased = Sampler(SamplingParams(logit_bias={7: 100.0}))  # a bias cannot revive a masked token
    assert biased.sample(logits, (), allowed) in allowed
    assert np.array_equal(logits, before)
    with pytest.raises(ValueError, match="allows no token"):
        Sampler(SamplingParams()).sample(logits, (), np.array([], dtype=np.int64))


# ---- compiler + matcher over bytes (id = byte + 3, EOS = 2) ----

@pytest.fixture(scope="module")
def compiler():
    c = GrammarCompiler(ByteVocab(), ByteVocab.n_vocab)
    yield c
    c.close()


def _ids(text: str) -> list[int]:
    return [b + 3 for b in text.encode()]


def test_matcher_masks_and_consumes(compiler):
    m = compiler.compile(Grammar.json_schema({"enum": ["ab", "ac"]}))
    assert m.allowed_ids().tolist() == _ids('"')
    for t in _ids('"a'):
        assert m.consume(t)
        m.prefetch()
    assert m.allowed_ids().tolist() == sorted(_ids("bc"))
    assert not m.consume(_ids("z")[0]) and m.error  # a token outside the mask: error state
    m = compiler.compile(Grammar.json_schema({"const": 1}))
    assert m.consume(_ids("1")[0]) and m.done


@pytest.mark.parametrize("schema,why", [
    ({"$ref": "#/$defs/missing"}, "does not exist"),
    ({"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}, "matches no text"),
    ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"],
      "additionalProperties": False}, "unsatisfiable"),
    ({"type": "bogus"}, "bogus"),
])
def test_compile_errors_name_the_problem(compiler, schema, why):
    with pytest.raises(ValidationError, match=why) as ei:
        compiler.compile(Grammar.json_schema(schema))
    assert ei.value.field == "grammar"


def test_lenient_ignores_unsupported_keywords(compiler):
    compiler.compile(Grammar.json_schema({"type": "array", "uniqueItems": True}, strict=False))


def test_grammar_record_validates():
    with pytest.raises(ValidationError):
        Grammar("yaml", "x")
    assert Grammar.json_schema({"type": "object"}).source == '{"type":"object"}'


# ---- the engine: noise logits, valid JSON ----

class _Detok:
    def __init__(self, tok, stop):
        self.stopped = False

    def push(self, t: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8}, "n": {"type": "integer", "minimum": 0, "maximum": 99},
    "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3}},
    "required": ["name", "n", "tags"], "additionalProperties": False}


def _noise_engine() -> Engine:
    """An engine over the byte vocabulary whose logits are noise (fake core)."""
    ctx = FakeContext(FakeModel(ByteVocab.n_vocab), n_ctx=4096, n_seq_max=8)
    return Engine(ctx, ByteVocab(), n_parallel=4, n_vocab=ByteVocab.n_vocab,
                  detokenizer_factory=_Detok)


def _run_sampled(eng: Engine, schema: dict, prefix: str, max_tokens: int) -> list:
    """8 requests at T=1 (seeds 0-7) under `schema`: [(token ids, FinishEvent)] in order."""
    streams = [eng.submit(GenerateRequest(prompt_tokens=_ids(f"{prefix}{i}"), max_tokens=max_tokens,
                                          sampling=SamplingParams(temperature=1.0, seed=i),
                                          grammar=Grammar.json_schema(schema)))
               for i in range(8)]
    out = []
    for s in streams:
        events = list(s)
        out.append(([ev.token_id for ev in events[:-1]], events[-1]))
    return out


@pytest.mark.parametrize("overlap", [True, False])
def test_engine_output_follows_the_grammar(overlap):
    eng = _noise_engine()
    eng.grammar.overlap = overlap  # masks on the worker during the decode, or in the model thread
    try:
        for toks, fin in _run_sampled(eng, SCHEMA, "p", 200):
            assert isinstance(fin, FinishEvent) and fin.reason is FinishReason.STOP, fin.error
            assert fin.usage.completion_tokens == len(toks)
            value = json.loads(bytes(t - 3 for t in toks))
            jsonschema.validate(value, SCHEMA)
        with pytest.raises(ValidationError):  # refused at submit, nothing queued
            eng.submit(GenerateRequest(prompt_tokens=[5], grammar=Grammar.json_schema({"$ref": "#/x"})))
        assert eng.stats().pending == 0
    finally:
        eng.close()


# ---- closing at the budget: valid even when max_tokens comes first ----

OPEN_SCHEMAS = [
    {"type": "object"},                                           # any keys, any values
    {"type": "array", "items": {"type": "number"}, "minItems": 2},  # digits without end
    {"type": "object", "properties": {"n": {"type": "number"}, "s": {"type": "string", "minLength": 3},
                                      "d": {"type": "string", "format": "date"},
                                      "e": {"type": "string", "format": "email"}},
     "required": ["n", "s", "d", "e"]},
    {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
]


@pytest.mark.parametrize("schema", OPEN_SCHEMAS)
def test_closing_path_from_the_start_is_valid(compiler, schema):
    m = compiler.compile(Grammar.json_schema(schema))
    path = compiler.closing().path(m._m, 200)
    assert path is not None
    value = json.loads(bytes(t - 3 for t in path))
    jsonschema.validate(value, schema)


BUDGET = 100  # tokens (= bytes here); the longest closing path above is ~45


@pytest.mark.parametrize("schema", OPEN_SCHEMAS)
def test_engine_closes_the_output_before_max_tokens(schema):
    """Noise logits at T=1 keep writing keys, digits and text: without the closing path almost
    every output would be cut by max_tokens; with it every one is valid JSON within the budget
    (finish 'length' when the budget shaped it)."""
    eng = _noise_engine()
    try:
        reasons = []
        for toks, fin in _run_sampled(eng, schema, "q", BUDGET):
            assert isinstance(fin, FinishEvent) and fin.reason in (FinishReason.STOP, FinishReason.LENGTH), fin.error
            assert len(toks) <= BUDGET
            jsonschema.validate(json.loads(bytes(t - 3 for t in toks)), schema)
            reasons.append(fin.reason)
        if schema == OPEN_SCHEMAS[0]:  # an open object rarely ends on noise: the budget does
            assert FinishReason.LENGTH in reasons
    finally:
        eng.close()


def test_compile_time_of_a_big_schema_is_bounded(compiler):
    s = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(5000)}}
    t0 = time.perf_counter()
    with pytest.raises(ValidationError, match="5000 properties"):
        compiler.compile(Grammar.json_schema(s))
    assert time.perf_counter() - t0 < 1.0
