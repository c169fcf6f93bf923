"""The fake-scheduler tier: fake Slurm commands on PATH, a real database.

Fast lifecycle tests for what a real Slurm will not do on demand (reject the
second of several arrays, time out). The real tier covers the rest. The fake
commands live in `bin/`; each logs its calls to `$FAKE_LOG/<name>.calls`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real.conftest import BIN, Project, project  # noqa: F401  (the same disposable example)

FAKE_BIN = Path(__file__).parent / "bin"


class FakeSlurm:
    def __init__(self, example: Project) -> None:
        self.project = example
        self.log = example.tmp

    def env(self, **more: str) -> dict[str, str]:
        return self.project.env(PATH=f"{FAKE_BIN}:{BIN}:/usr/bin:/bin", FAKE_LOG=str(self.log),
                                **more)

    def calls(self, name: str) -> list[str]:
        path = self.log / f"{name}.calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def fake_slurm(project: Project) -> FakeSlurm:  # noqa: F811
    return FakeSlurm(project)
