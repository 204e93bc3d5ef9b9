"""Engine layer: the model thread, its bounded queue, the scheduler and slots, the prefix cache,
request streams and per-request sampling. The only Python layer that calls `lanner._core`;
knows no HTTP, JSON or dialect."""

from .engine import Engine

__all__ = ["Engine"]
