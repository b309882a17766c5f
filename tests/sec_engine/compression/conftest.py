"""Fixtures for the compression ops tests: every test taking ``arch`` runs on all families."""

from __future__ import annotations

import pytest

from .tiny_models import ARCHS


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)
