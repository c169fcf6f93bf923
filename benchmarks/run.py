"""Run djhpc's performance benchmarks (targets P1-P7 of issues 6 and 12).

    .venv/bin/python benchmarks/run.py [--quick] [--only P1,P3] [--json out.json]

Each target is a ratio (or a limit) measured side by side in this one run,
against the real MariaDB (DJ_HOST/DJ_USER/DJ_PASS, default 127.0.0.1/root/"")
and, for P4, P6 and P7, the local Slurm (`scripts/local-slurm.sh start`). Every schema
made here starts with a random `djhpc_bench_<hex>` prefix and is dropped at
the end. Prints a table; writes JSON (default benchmarks/results/latest.json).
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    Bench,
    Outcome,
    configure_env,
    drop_schemas,
    new_prefix,
    server_versions,
)

BENCHMARKS: dict[str, str] = {
    "P1": "p1_overhead",
    "P2": "p2_planning",
    "P3": "p3_status",
    "P4": "p4_scaleout",
    "P5": "p5_task_start",
    "P6": "p6_skew",
    "P7": "p7_time_limit",
}
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"


def machine() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "host": platform.node(), "platform": platform.platform(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    try:
        model = next(line.split(":", 1)[1].strip()
                     for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        info["cpu_model"] = model
        mem_kb = next(int(line.split()[1])
                      for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        info["memory_gb"] = round(mem_kb / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    import datajoint

    import djhpc

    info["datajoint"] = datajoint.__version__
    info["djhpc"] = djhpc.__version__
    info.update(server_versions())
    try:
        out = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, timeout=10)
        info["slurm"] = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["slurm"] = None
    return info


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True).stdout


def freeze_code(folder: Path, rev: str | None) -> str:
    """Copy djhpc (and its profiles) to `folder` and put it first on every import path.

    djhpc is installed editable and may be edited while the benchmarks run; a
    copy taken now is what this process, its children and every Slurm task
    (sbatch passes PYTHONPATH on) import. `rev`: a git revision instead of the
    working tree. Returns which code it is: the commit, plus a hash of the
    working tree's changes to djhpc/ when there are any.
    """
    import hashlib
    import io
    import os
    import tarfile

    folder.mkdir(parents=True)
    if rev:
        archive = subprocess.run(["git", "archive", rev, "djhpc", "slurm_templates"], cwd=ROOT,
                                 capture_output=True, timeout=60, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        label = git("rev-parse", "--short", rev).strip()
    else:
        for name in ("djhpc", "slurm_templates"):
            shutil.copytree(ROOT / name, folder / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        label = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "djhpc", "slurm_templates")
        if diff:
            label += f"+changes-{hashlib.md5(diff.encode()).hexdigest()[:8]}"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    sys.path.insert(0, str(folder))
    import djhpc

    assert Path(djhpc.__file__).is_relative_to(folder), djhpc.__file__
    return label


def table(outcomes: list[Outcome]) -> str:
    rows = [("target", "goal", "measured", "value", "limit", "result")]
    for outcome in outcomes:
        if not outcome.checks:
            error = str(outcome.details.get("error", "no result"))
            rows.append((outcome.name, "", error[:120] + ("…" if len(error) > 120 else ""), "", "",
                         "ERROR"))
        for c in outcome.checks:
            sign = "≥" if c.higher_is_better else "≤"
            rows.append((c.id, c.target, c.measured, f"{c.value:g}", f"{sign} {c.limit:g}",
                         "pass" if c.passed else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--only", help="comma-separated targets, e.g. P1,P3")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--rev", help="benchmark this git revision of djhpc "
                        "(default: the working tree, copied at the start)")
    parser.add_argument("--keep", action="store_true", help="keep schemas and scratch files")
    args = parser.parse_args(argv)
    selected = [s.strip().upper() for s in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [s for s in selected if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    prefix = new_prefix()
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    code = freeze_code(tmp / "code", args.rev)  # before anything imports djhpc
    configure_env()
    # SIGTERM runs the clean-up below too (schemas dropped, children stopped).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    bench = Bench(quick=args.quick, prefix=prefix, tmp=tmp, log=log)
    log(f"benchmarks {', '.join(selected)}{' (quick)' if args.quick else ''} of djhpc {code}; "
        f"schemas {prefix}_*; scratch {tmp}")
    started = datetime.now(timezone.utc)
    host = machine()
    outcomes: list[Outcome] = []
    try:
        for name in selected:
            import importlib

            function: Callable[[Bench], Outcome] = importlib.import_module(BENCHMARKS[name]).run
            log(f"== {name}")
            t0 = time.perf_counter()
            try:
                outcome = function(bench)
            except Exception as error:
                traceback.print_exc()
                outcome = Outcome(name, details={"error": f"{type(error).__name__}: {error}"})
            outcome.seconds = time.perf_counter() - t0
            outcomes.append(outcome)
            log(f"== {name} took {outcome.seconds:.0f} s")
    finally:
        if not args.keep:
            dropped = drop_schemas(prefix)
            log(f"dropped {len(dropped)} schemas")
            shutil.rmtree(tmp, ignore_errors=True)

    print(table(outcomes))
    result = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "quick": args.quick, "machine": host,
        "djhpc": code,
        "benchmarks": [o.to_json() for o in outcomes],
        "all_passed": all(c.passed for o in outcomes for c in o.checks)
        and all(o.checks for o in outcomes),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
