"""Installed from a wheel, djhpc still finds its cluster profiles."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.once
def test_wheel_carries_the_profiles_and_finds_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("djhpc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"djhpc/slurm_templates/{p}.yaml"
            for p in ("local", "idun", "saga", "saga-optimist", "betzy", "olivia")} <= set(names)
    # A fresh environment with djhpc only from the wheel (and what profiles
    # need), far from the checkout.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "pyyaml", str(wheel)],
                   check=True, capture_output=True)
    found = subprocess.run(
        [str(python), "-c", "import djhpc.config as p, sys; "
         "print(p.__file__); print(' '.join(p.available_profiles()))"],
        cwd=tmp_path, check=True, capture_output=True, text=True).stdout.splitlines()
    assert str(ROOT) not in found[0]
    assert found[1].split() == ["betzy", "idun", "local", "olivia", "saga", "saga-optimist"]
