"""Shared fixtures: paths of the two real models (installed from PyPI) and tiny GGUF writers."""

from __future__ import annotations

import pytest

from lanner.default_model import gemma3_path, smollm2_path


@pytest.fixture(scope="session")
def smollm2_file() -> str:
    return str(smollm2_path())


@pytest.fixture(scope="session")
def gemma3_file() -> str:
    return str(gemma3_path())


@pytest.fixture(scope="session", params=["smollm2", "gemma3"])
def real_model_file(request) -> str:
    return str(smollm2_path() if request.param == "smollm2" else gemma3_path())
