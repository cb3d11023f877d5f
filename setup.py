"""Builds libferry.so (the C preload shim) into the package during `pip install`."""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


class BuildWithShim(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "ferry" / "_lib" / "libferry.so"
        if getattr(self, "editable_mode", False):
            target = HERE / "src" / "ferry" / "_lib" / "libferry.so"
        target.parent.mkdir(parents=True, exist_ok=True)
        sources = sorted(str(p) for p in (HERE / "shim").glob("*.c"))
        subprocess.run(["gcc", "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra",
                        "-Werror", "-Wno-nonnull-compare", "-o", str(target), *sources, "-ldl", "-lpthread"],
                       check=True)


class PlatformDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform, not "any"."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithShim}, distclass=PlatformDistribution)
