"""Builds libferry.so (the C preload shim) and the `ferry` command (the C front,
launcher/ferry.c) into the package during `pip install` and `pip wheel`.

The C front is installed twice: as `ferry/_lib/ferry` beside libferry.so, and as the
`ferry` command on PATH (a wheel data file, `<prefix>/bin/ferry`).  The Python CLI it
hands off to is `python -m ferry`; the console script keeps the name `ferry-py`.
"""

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
# Where the wheel's data file `bin/ferry` is taken from (data_files want a path relative to here).
COMMAND = Path("build") / "launcher" / "ferry"


def shimlib():
    """src/ferry/shimlib.py, loaded by path: one place holds the shim's compiler flags."""
    spec = importlib.util.spec_from_file_location("ferry_shimlib", HERE / "src" / "ferry" / "shimlib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def platlib_from_scripts() -> str:
    """Where the package lands relative to the `bin` its command lands in, in the scheme
    this interpreter installs with (../lib/python3.X/site-packages in a venv)."""
    base = "/prefix"
    paths = sysconfig.get_paths(vars={"base": base, "platbase": base, "installed_base": base,
                                      "installed_platbase": base, "userbase": base})
    return os.path.relpath(paths["platlib"], paths["scripts"])


class BuildWithShim(build_py):
    def run(self):
        super().run()
        lib = shimlib()
        editable = getattr(self, "editable_mode", False)
        target = (HERE / "src" if editable else Path(self.build_lib)) / "ferry" / "_lib"
        lib.build(target / "libferry.so", HERE / "shim")
        lib.build_launcher(target / "ferry", HERE / "launcher", sys.executable,
                           checkout=HERE if editable else None, platlib=platlib_from_scripts())
        (HERE / COMMAND).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target / "ferry", HERE / COMMAND)


class PlatformDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform, not "any"."""

    def has_ext_modules(self):
        return True

    def has_data(self):
        """editable_wheel installs data files (our bin/ferry) only if this says so; setuptools'
        Distribution names it has_data_files, so without this `pip install -e .` had no `ferry`."""
        return self.has_data_files()


setup(cmdclass={"build_py": BuildWithShim}, distclass=PlatformDistribution,
      data_files=[("bin", [str(COMMAND)])])
