"""Static limits on a grammar's source, checked before it is compiled (cheap, no tokenizer).

Owns: the bounds a JSON schema or regex must stay within so that compiling it and computing its
masks stays fast (a request's grammar is compiled before it is queued, and must be answered
within a second): nesting depth, total properties, size, and the repetition a regex may nest.
Each violation is a ValidationError naming the problem. Must not: compile or import llguidance.
"""

from __future__ import annotations

from typing import Any

from ..types import ValidationError

MAX_SCHEMA_DEPTH = 64          # nested JSON objects/arrays in a schema document
MAX_SCHEMA_PROPERTIES = 1000   # properties over all objects of a schema (compile time grows ~n^2)
MAX_SCHEMA_BYTES = 1 << 20     # the schema as JSON text
MAX_PATTERN_CHARS = 2000       # one regex
MAX_NESTED_REPEAT = 10_000     # product of counted repetitions nested in one regex: (a{100}){100}


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0, [] is 1), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        depth = max(depth, d)
        stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return depth


def check_schema(schema: Any, n_bytes: int) -> None:
    """Raise ValidationError('grammar', ...) if `schema` (parsed, n_bytes of JSON text) is past
    a limit or is not a schema at all."""
    if not isinstance(schema, (dict, bool)):
        raise ValidationError("grammar", f"a JSON schema must be an object, got {type(schema).__name__}")
    if n_bytes > MAX_SCHEMA_BYTES:
        raise ValidationError("grammar", f"the schema is {n_bytes} bytes; the limit is {MAX_SCHEMA_BYTES}")
    depth = json_depth(schema)
    if depth > MAX_SCHEMA_DEPTH:
        raise ValidationError("grammar", f"the schema nests {depth} levels deep; the limit is "
                                         f"{MAX_SCHEMA_DEPTH}")
    n_props = 0
    stack = [schema]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
            continue
        if not isinstance(v, dict):
            continue
        props = v.get("properties")
        if isinstance(props, dict):
            n_props += len(props)
        if isinstance(v.get("pattern"), str):
            check_regex(v["pattern"])
        pp = v.get("patternProperties")
        if isinstance(pp, dict):
            for p in pp:
                check_regex(p)
        stack.extend(v.values())
    if n_props > MAX_SCHEMA_PROPERTIES:
        raise ValidationError("grammar", f"the schema has {n_props} properties; the limit is "
                                         f"{MAX_SCHEMA_PROPERTIES}")


def check_regex(pattern: str) -> None:
    """Bound a regex's length and the product of its nested counted repetitions."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValidationError("grammar", f"a pattern is {len(pattern)} characters; the limit is "
                                         f"{MAX_PATTERN_CHARS}")
    weight = nested_repeat(pattern)
    if weight > MAX_NESTED_REPEAT:
        raise ValidationError("grammar", f"pattern {pattern[:60]!r} nests counted repetitions "
                                         f"{weight} times deep; the limit is {MAX_NESTED_REPEAT}")


def nested_repeat(pattern: str) -> int:
    """The largest product of {n,m} counts along one nesting path of `pattern` ((a{10}){20}
    -> 200; a{10}b{20} -> 20). `*`, `+`, `?` count 1: unbounded repetition stays cheap."""
    stack: list[int] = [1]  # max weight seen inside each open group
    last = 1                # weight of the previous atom (what a quantifier applies to)
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            last = 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            last = 1
        elif c == "(":
            stack.append(1)
            i += 1
        elif c == ")":
            last = stack.pop() if len(stack) > 1 else 1
            i += 1
        elif c == "{":
            j = pattern.find("}", i)
            body = pattern[i + 1:j] if j > 0 else ""
            nums = [x.strip() for x in body.split(",")]
            if j > 0 and nums and all(x.isdigit() or x == "" for x in nums) and nums[0].isdigit():
                count = max(int(x) for x in nums if x)
                last = last * max(count, 1)
                stack[-1] = max(stack[-1], last)
                i = j + 1
            else:
                i += 1
                last = 1
            continue
        else:
            last = 1
            i += 1
        stack[-1] = max(stack[-1], last)
    return max(stack)
