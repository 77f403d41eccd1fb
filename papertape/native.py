"""Which modules of the core run compiled, and the import hook that picks, module by module, the compiled build
(Cython, made by setup.py from the unchanged .py) or the .py itself, the reference.

The .py is chosen when PAPERTAPE_PURE_PYTHON=1 (the differential test, debugging; or a comma-separated list of
modules: theirs), when the module was not built (no C compiler, or the build failed: the install still succeeds), or
when its build is older than its .py or .pxd (a stale build would silently run old code; a warning is logged).
status() says which, in one line. No I/O beyond stat() of the modules' files; the hook is installed by
papertape/__init__.py, before any module of the core is imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType

PURE_ENV = "PAPERTAPE_PURE_PYTHON"
NOT_BUILT = "not built: no C compiler at install, or the build failed"

# What setup.py compiles: the modules a tick runs through (bench/bench_core.py --profile; --compare-pure measures).
COMPILED: tuple[str, ...] = (
    "papertape.core.market.book",
    "papertape.core.market.bars",
    "papertape.core.market.partition",
    "papertape.core.engine",
    "papertape.core.account",
    "papertape.core.venue.paper",
    "papertape.core.venue.fill_model",
    "papertape.core.venue.fees",
    "papertape.core.venue.margin",
    "papertape.core.session.facade",
    "papertape.core.session.margin_rules",
    "papertape.core.session.market_view",
    "papertape.core.session.timers",
    "papertape.core.session.strategy_runner",
    "papertape.core.strategies.trend_following",
    "papertape.core.strategies.mean_reversion",
    "papertape.core.strategies.scripted",
)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding papertape/
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    module: str
    path: str  # the file it is loaded from
    compiled: bool
    reason: str = ""  # why the .py, when not compiled


def pure_forced(module: str = "") -> bool:
    """PAPERTAPE_PURE_PYTHON=1: every module's .py; a comma-separated list of modules: theirs (to measure each)."""
    value = os.environ.get(PURE_ENV, "")
    return value == "1" or bool(module) and module in value.split(",")


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def choose(module: str, root: str = _ROOT) -> Choice | None:
    """Where `module` (under `root`) is loaded from, and why; None when it is neither in COMPILED nor built (the
    default finders' business)."""
    base = os.path.join(root, *module.split("."))
    py = base + ".py"
    built = [base + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES if _mtime(base + suffix)]
    if module not in COMPILED:
        return Choice(module, py, False, "a leftover build, not in native.COMPILED") if built else None
    if pure_forced(module):
        return Choice(module, py, False, f"{PURE_ENV} set")
    if not built:
        return Choice(module, py, False, NOT_BUILT)
    ext = built[0]
    sources = [t for t in (_mtime(py), _mtime(base + ".pxd")) if t is not None]
    if sources and max(sources) > (_mtime(ext) or 0):
        return Choice(module, py, False, "stale build (its .py or .pxd is newer)")
    return Choice(module, ext, True)


class _Finder(importlib.abc.MetaPathFinder):
    """Ahead of the default finders (which would load the build whenever it exists)."""

    def __init__(self) -> None:
        self.chosen: dict[str, Choice] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> ModuleSpec | None:
        choice = choose(fullname) if fullname.startswith("papertape.") else None
        if choice is None:
            return None
        self.chosen[fullname] = choice
        if not choice.compiled and choice.reason != NOT_BUILT and not pure_forced(fullname):
            _log.warning("%s: %s: running its .py; rebuild with `pip install -e .`", fullname, choice.reason)
        loader = (importlib.machinery.ExtensionFileLoader(fullname, choice.path) if choice.compiled
                  else importlib.machinery.SourceFileLoader(fullname, choice.path))
        return importlib.util.spec_from_file_location(fullname, choice.path, loader=loader)


_FINDER = _Finder()


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def choices() -> list[Choice]:
    """Every module of COMPILED: as it was loaded, or as it would be."""
    return [_FINDER.chosen.get(m) or _listed(m) for m in COMPILED]


def _listed(module: str) -> Choice:
    choice = choose(module)
    assert choice is not None  # a module of COMPILED always has one
    return choice


def status() -> str:
    """One line: "compiled core: yes (cython, 17 modules)", "compiled core: no, pure Python (not built: ...)"..."""
    all_ = choices()
    pure = [c for c in all_ if not c.compiled]
    if not pure:
        return f"compiled core: yes (cython, {len(all_)} modules)"
    reasons = sorted({c.reason for c in pure})
    if len(pure) == len(all_):
        return f"compiled core: no, pure Python ({'; '.join(reasons)})"
    names = ", ".join(c.module.rsplit(".", 1)[-1] for c in pure)
    return (f"compiled core: partly (cython, {len(all_) - len(pure)} of {len(all_)} modules; pure Python: {names}: "
            f"{'; '.join(reasons)})")
