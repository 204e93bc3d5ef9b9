"""lanner: local LLM inference engine and server on ggml.

Public entry: `lanner.LLM` (see llm.py). The native core is `lanner._core`.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing lanner must not load the native core
    if name == "LLM":
        from .llm import LLM

        return LLM
    if name == "Grammar":
        from .types import Grammar

        return Grammar
    if name == "Completion":
        from .llm import Completion

        return Completion
    raise AttributeError(name)
