"""Markers by tier: everything under real/ and fake/ talks to a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name in ("real", "fake"):
            item.add_marker(pytest.mark.real)
