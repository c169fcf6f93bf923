"""Run one benchmark step in a fresh interpreter: `child.py module:function JSON-ARGS`.

Used for measurements that need their own process (peak memory, cold imports).
Prints the function's JSON-able result as the last line of stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    module_name, _, function = sys.argv[1].partition(":")
    args = json.loads(sys.argv[2])
    result = getattr(importlib.import_module(module_name), function)(**args)
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
