"""Which modules of the core run compiled, and the import hook that picks the compiled build (mypyc, made by setup.py
from the unchanged .py) or the .py itself, the reference.

mypyc compiles the modules together into one shared library (SHARED_LIB) behind a small extension module per module,
and compiled modules call each other's compiled code directly: the build is one unit, used whole or not at all. The
.py of every module is chosen when PAPERTAPE_PURE_PYTHON=1 (the differential test, debugging, profiling), when the
core was not built (no C compiler, or the build failed: the install still succeeds), or when any of its .py is newer
than the build (a stale build would silently run old code; a warning is logged). status() says which, in one line.
No I/O beyond stat() of the modules' files; the hook is installed by papertape/__init__.py, before any module of the
core is imported.
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
from typing import cast

PURE_ENV = "PAPERTAPE_PURE_PYTHON"
NOT_BUILT = "not built: no C compiler at install, or the build failed"
STALE = "stale build (a .py of the compiled core is newer than its build)"
SHARED_LIB = "papertape.core.compiled__mypyc"  # setup.py's group name, "papertape.core.compiled", plus mypyc's suffix

# What setup.py compiles: the modules a tick runs through (bench/bench_core.py --profile; --compare-pure measures),
# the session's included: a compiled module calling a Python one pays Python's call protocol on every tick.
# Not the modules of pydantic models (mypyc 2.4 emits C for them that does not compile): venue.fill_settings,
# session.config, risk, auto_close.
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
    "papertape.core.session.placement",
    "papertape.core.session.messages",
    "papertape.core.session.ledger",
    "papertape.core.session.gate",
    "papertape.core.session.sizing",
    "papertape.core.session.control",
    "papertape.core.session.state",
    "papertape.core.session.scores",
    "papertape.core.session.intel",
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


def pure_forced() -> bool:
    """PAPERTAPE_PURE_PYTHON=1: every module's .py."""
    return os.environ.get(PURE_ENV, "") == "1"


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _built(base: str) -> str | None:
    """The extension module built at `base` (a path without suffix), if any."""
    return next((base + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES if _mtime(base + suffix)), None)


def _base(module: str, root: str) -> str:
    return os.path.join(root, *module.split("."))


def _build_state(root: str) -> str:
    """"" when the whole build is there and newer than every .py it was made from, else why not."""
    lib = _built(_base(SHARED_LIB, root))
    if lib is None or any(_built(_base(m, root)) is None for m in COMPILED):
        return NOT_BUILT
    built_at = _mtime(lib) or 0
    return STALE if any((_mtime(_base(m, root) + ".py") or 0) > built_at for m in COMPILED) else ""


def choose(module: str, root: str = _ROOT) -> Choice | None:
    """Where `module` (under `root`) is loaded from, and why; None when it is neither in COMPILED nor built, or is
    the build's shared library (the default finders' business)."""
    base = _base(module, root)
    py = base + ".py"
    if module == SHARED_LIB:
        return None
    if module not in COMPILED:
        return Choice(module, py, False, "a leftover build, not in native.COMPILED") if _built(base) else None
    if pure_forced():
        return Choice(module, py, False, f"{PURE_ENV} set")
    problem = _build_state(root)
    if problem:
        return Choice(module, py, False, problem)
    return Choice(module, cast(str, _built(base)), True)


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
        if not choice.compiled and choice.reason != NOT_BUILT and not pure_forced():
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
    """One line: "compiled core: yes (mypyc, 26 modules)", "compiled core: no, pure Python (not built: ...)"..."""
    all_ = choices()
    pure = [c for c in all_ if not c.compiled]
    if not pure:
        return f"compiled core: yes (mypyc, {len(all_)} modules)"
    reasons = sorted({c.reason for c in pure})
    if len(pure) == len(all_):
        return f"compiled core: no, pure Python ({'; '.join(reasons)})"
    names = ", ".join(c.module.rsplit(".", 1)[-1] for c in pure)
    return (f"compiled core: partly (mypyc, {len(all_) - len(pure)} of {len(all_)} modules; pure Python: {names}: "
            f"{'; '.join(reasons)})")
