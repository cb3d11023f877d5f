"""Builds libferry.so (the C preload shim) into the package during `pip install` and `pip wheel`."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


def shimlib():
    """src/ferry/shimlib.py, loaded by path: one place holds the shim's compiler flags."""
    spec = importlib.util.spec_from_file_location("ferry_shimlib", HERE / "src" / "ferry" / "shimlib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithShim(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "ferry" / "_lib" / "libferry.so"
        if getattr(self, "editable_mode", False):
            target = HERE / "src" / "ferry" / "_lib" / "libferry.so"
        shimlib().build(target, HERE / "shim")


class PlatformDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform, not "any"."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithShim}, distclass=PlatformDistribution)
