"""Shared test setup: ``tests/`` is importable (``models``, ``synthetic``), data paths, and fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


@pytest.fixture
def tiny_model():
    """A fresh ``TinyNet`` LoadedModel (classes=300: big enough for weight quantization)."""
    from models import tiny

    return tiny()
