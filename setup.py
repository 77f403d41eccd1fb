"""The optional compiled core: the modules papertape/native.py lists, compiled by mypyc from their unchanged, typed .py
into one shared library (papertape/core/compiled__mypyc) behind an extension module per module. Everything else is in
pyproject.toml; mypyc reads its type-checking options from mypyc.ini (the modules' imports as the checker sees them).

Without mypyc or a C compiler, or when the build fails, the install goes on without it: papertape/native.py then loads
the .py of every module and says so (status()). PAPERTAPE_PURE_PYTHON=1 at install time skips the build.
"""
from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from mypyc.build import mypycify
except ImportError as missing:  # outside pip's build isolation, mypy (which has mypyc) may not be installed
    mypycify, MYPYC_MISSING = None, str(missing)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from papertape import native  # noqa: E402  (pure, standard library only: safe in the isolated build environment)

GROUP = native.SHARED_LIB.removesuffix("__mypyc")  # the shared library's name, inside the core's package


class OptionalBuildExt(build_ext):
    """A build that fails leaves the core pure Python; the install succeeds. The C files compile in parallel."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler (setuptools' CompileError, PlatformError...), or anything else
            self._skip("the compiled core", exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(ext.name, exc)

    @staticmethod
    def _skip(what: str, exc: BaseException) -> None:
        print(f"papertape: {what} not built ({type(exc).__name__}: {exc}); its .py runs instead",
              file=sys.stderr)


def extensions() -> list:
    if native.pure_forced():
        print(f"papertape: {native.PURE_ENV}=1: the compiled core is not built", file=sys.stderr)
        return []
    if mypycify is None:
        print(f"papertape: mypyc is missing ({MYPYC_MISSING}); the pure-Python core runs instead", file=sys.stderr)
        return []
    paths = [m.replace(".", "/") + ".py" for m in native.COMPILED]
    try:
        return mypycify(["--config-file", "mypyc.ini", *paths], opt_level="3", group_name=GROUP)
    except (Exception, SystemExit) as exc:  # a type error stops mypyc: the whole build is skipped, loudly
        print(f"papertape: mypyc failed ({exc!r}); the pure-Python core runs instead", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
