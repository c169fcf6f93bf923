"""Resolve a TARGET string to the user's table class.

Four forms: `pkg.module.Table`, `pkg.module:Table`, `path/to/file.py:Table`,
and a bare `Table` looked up in the `modules:` of djhpc.yaml. Whatever the form,
the result is a `Target` whose `ref` (`module:Class` plus the directories to put
on sys.path) lets a task on a compute node import the very same class.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from djhpc import dj
from djhpc.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class Target:
    module: str
    name: str
    paths: tuple[str, ...] = field(default=())  # added to sys.path before import

    @classmethod
    def from_ref(cls, ref: str, paths: Sequence[str] = ()) -> Target:
        """The target recorded as `module:Class` (see `ref`)."""
        module, _, name = ref.partition(":")
        return cls(module=module, name=name, paths=tuple(paths))

    @property
    def ref(self) -> str:
        return f"{self.module}:{self.name}"

    def load(self) -> Any:
        """Import the module and return the class (connecting to the database)."""
        for path in reversed(self.paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        module = import_module(self.module)
        try:
            return getattr(module, self.name)
        except AttributeError:
            raise _unknown_name(self.name, self.module, module) from None


def parse(text: str, modules: Sequence[str] = (), cwd: Path | None = None) -> list[Target]:
    """Candidate targets for `text`, in the order they are tried."""
    cwd = (cwd or Path.cwd()).resolve()
    here = (str(cwd),)
    text = text.strip()
    if not text:
        raise UsageError("No target given", "Name a table, e.g. djhpc submit pipeline.MyTable")
    if ":" in text:
        left, _, name = text.rpartition(":")
        if left.endswith(".py"):
            path = (cwd / left).resolve()
            if not path.is_file():
                raise UsageError(f"No such file: {left}", "Check the path before the ':'")
            return [Target(module=path.stem, name=name, paths=(str(path.parent),))]
        return [Target(module=left, name=name, paths=here)]
    if "." in text:
        module, _, name = text.rpartition(".")
        return [Target(module=module, name=name, paths=here)]
    if not modules:
        raise UsageError(
            f"Cannot tell where table {text!r} is defined",
            "Write it as module.Table or module:Table, or list your modules under "
            "`modules:` in djhpc.yaml",
        )
    return [Target(module=module, name=text, paths=here) for module in modules]


def resolve(text: str, modules: Sequence[str] = (), cwd: Path | None = None) -> tuple[Target, Any]:
    """The target and its class, checked to be an auto-populated table."""
    candidates = parse(text, modules, cwd)
    found: list[tuple[Target, Any]] = []
    last_error: UsageError | None = None
    for target in candidates:
        try:
            found.append((target, target.load()))
        except UsageError as error:
            if len(candidates) == 1 or not error.what.startswith("No table"):
                raise
            last_error = error
    if not found:
        names = sorted({n for t in candidates for n in _table_names_in(t.module)})
        close = difflib.get_close_matches(text, names, n=3)
        hint = f"Did you mean {', '.join(close)}?" if close else (
            f"Tables found in {', '.join(modules)}: {', '.join(names) or 'none'}")
        raise UsageError(f"No table {text!r} in {', '.join(modules)}", hint) from last_error
    target, cls = found[0]
    if not dj.is_autopopulated(cls):
        raise UsageError(
            f"{text} is a {dj.table_kind(cls)} table, not an auto-populated one",
            "djhpc populates dj.Computed and dj.Imported tables",
        )
    return target, cls


def import_module(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except UsageError:
        raise
    except ModuleNotFoundError as error:
        if error.name and (error.name == name or name.startswith(error.name + ".")):
            raise UsageError(
                f"No module named {name!r}",
                "Run djhpc from your pipeline's directory, or install the pipeline",
            ) from None
        raise _import_failed(name, error) from None
    except Exception as error:
        if _is_database_error(error):
            raise dj.connection_error(error) from None
        raise _import_failed(name, error) from None
    except SystemExit as error:
        # A module that exits at import (a script's `sys.exit()`) must not end djhpc silently.
        raise UsageError(f"Importing {name} called sys.exit({error.code!r})",
                         "Guard the module's script part with if __name__ == '__main__':") from None


def _import_failed(name: str, error: BaseException) -> UsageError:
    frames = traceback.extract_tb(error.__traceback__)
    where = next((f"{f.filename}:{f.lineno}" for f in reversed(frames)
                  if "importlib" not in f.filename), "")
    at = f" at {where}" if where else ""
    message = " ".join(str(error).split()) or "(no message)"
    return UsageError(f"Importing {name} failed{at}: {type(error).__name__}: {message}",
                      "Fix the error, then check with python -c 'import " + name + "'")


def _is_database_error(error: BaseException) -> bool:
    module = type(error).__module__
    return module.startswith(("pymysql", "psycopg")) or "LostConnection" in type(error).__name__


def _table_names_in(module_name: str) -> list[str]:
    module = sys.modules.get(module_name)
    if module is None:
        return []
    return [n for n, v in vars(module).items() if dj.is_autopopulated(v)]


def _unknown_name(name: str, module_name: str, module: Any) -> UsageError:
    names = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
    tables = [n for n in names if dj.is_autopopulated(getattr(module, n))]
    close = difflib.get_close_matches(name, tables or names, n=3)
    hint = f"Did you mean {', '.join(close)}?" if close else (
        f"Auto-populated tables there: {', '.join(tables) or 'none'}")
    return UsageError(f"No table {name!r} in module {module_name}", hint)
