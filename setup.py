"""The optional compiled core: the modules papertape/native.py lists, compiled by Cython from their unchanged .py
(types only from an augmenting .pxd beside a .py, if any). Everything else is in pyproject.toml.

Without Cython or a C compiler, or when a module fails to build, the install goes on without it: papertape/native.py
then loads that module's .py and says so (status()). PAPERTAPE_PURE_PYTHON=1 at install time skips the build.
"""
from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError as missing:  # outside pip's build isolation, Cython may not be installed
    cythonize, CYTHON_MISSING = None, str(missing)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from papertape import native  # noqa: E402  (pure, standard library only: safe in the isolated build environment)

# Python's own semantics everywhere: annotations are not C types (ints stay unbounded, floats stay Python floats,
# Decimal stays Decimal), division and powers as Python does them, no wraparound, bounds checked.
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,
    "binding": True,
    "embedsignature": False,
    "always_allow_keywords": True,
}


class OptionalBuildExt(build_ext):
    """A module that fails to compile is left as pure Python; the install succeeds. Modules compile in parallel."""

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
    if cythonize is None:
        print(f"papertape: Cython is missing ({CYTHON_MISSING}); the pure-Python core runs instead", file=sys.stderr)
        return []
    exts = [Extension(m, [m.replace(".", "/") + ".py"]) for m in native.COMPILED]
    try:
        return cythonize(exts, compiler_directives=DIRECTIVES, build_dir="build/cython", quiet=True,
                         nthreads=0)
    except Exception as exc:  # a module Cython cannot translate: the whole build is skipped, loudly
        print(f"papertape: Cython failed ({exc}); the pure-Python core runs instead", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
