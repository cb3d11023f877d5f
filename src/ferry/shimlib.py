"""Where libferry.so and the C front (`ferry`, launcher/ferry.c) are, building them when
running from a source checkout.

`pip install` builds both into the package's `_lib/` (see setup.py); a checkout used
through PYTHONPATH gets them built here on first use, into the user cache, keyed by a
digest of their sources (and, for the front, of the interpreter it hands off to).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "_lib" / "libferry.so"
SOURCES = Path(__file__).resolve().parents[2] / "shim"
PACKAGED_LAUNCHER = PACKAGED.with_name("ferry")
LAUNCHER_SOURCES = SOURCES.with_name("launcher")
LAUNCHER_CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]
CFLAGS = ["-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
          "-Wno-nonnull-compare"]


def _compile(what: str, sources: Path, out: Path, tmp: Path, args: list[str]) -> Path:
    """gcc `args` writing `tmp`, then `tmp` renamed to `out` (so a half-built file is never used)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([os.environ.get("CC", "gcc"), *args], check=True)
    except FileNotFoundError:
        sys.exit(f"ferry: building {what} needs a C compiler (gcc): install it, e.g. apt-get install gcc")
    except subprocess.CalledProcessError:
        sys.exit(f"ferry: building {what} from {sources} failed (compiler errors above)")
    tmp.replace(out)
    return out


def build(out: Path, sources: Path = SOURCES) -> Path:
    files = sorted(str(p) for p in sources.glob("*.c"))
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    return _compile("the shim", sources, out, tmp, [*CFLAGS, "-o", str(tmp), *files, "-ldl", "-lpthread"])


def build_launcher(out: Path, sources: Path = LAUNCHER_SOURCES, python: str = sys.executable,
                   checkout: Path | None = None, platlib: str | None = None) -> Path:
    """The C front, handing off to `python -m ferry` (`python`, or the venv's own
    interpreter when it is installed in one).  With `checkout` (an editable install) it
    finds the shim in the checkout's src/ferry/_lib and hands off whenever a source there
    is newer; `platlib` is where the package is relative to the command's directory, for
    the copy a wheel installs in bin/."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    defines = [f"-DFERRY_PYTHON={_c_string(python)}",
               f"-DFERRY_PYVER={_c_string(f'{sys.version_info[0]}.{sys.version_info[1]}')}"]
    if checkout is not None:
        defines.append(f"-DFERRY_CHECKOUT={_c_string(str(checkout))}")
    if platlib is not None:
        defines.append(f"-DFERRY_PLATLIB={_c_string(platlib)}")
    args = [*LAUNCHER_CFLAGS, *defines, "-I", str(sources.parent / "shim"), "-o", str(tmp), str(sources / "ferry.c")]
    return _compile("the ferry command", sources, out, tmp, args)


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cache(kind: str) -> Path:
    import platformdirs  # here, so setup.py can load this file before dependencies are installed

    return Path(platformdirs.user_cache_dir("ferry")) / kind


def _checkout_build(kind: str, name: str, files: list[Path], make, seed: bytes = b"") -> Path:
    """A checkout's build of `files`, cached in the user cache by their digest: rebuilt
    whenever a source changed, so tests never run a stale one."""
    digest = hashlib.sha256(seed)
    for p in files:
        digest.update(p.name.encode() + p.read_bytes())
    out = _cache(kind) / name.format(digest.hexdigest()[:16])
    return out if out.exists() else make(out)


def _packaged(p: Path, what: str) -> Path:
    if p.exists():
        return p
    sys.exit(f"ferry: {what} is missing ({p}); reinstall ferry with `pip install .`")


def launcher_path() -> Path:
    """The C front: in a checkout built from launcher/ (rebuilt when a source or the
    interpreter changed); else the packaged one.  From a checkout it finds the shim only
    through FERRY_SHIM (set it to path())."""
    if LAUNCHER_SOURCES.is_dir():
        files = [*sorted(LAUNCHER_SOURCES.glob("*.[ch]")), *sorted(SOURCES.glob("fy_*.h"))]
        return _checkout_build("launcher", "ferry-{}", files, build_launcher, sys.executable.encode())
    return _packaged(PACKAGED_LAUNCHER, "the ferry command")


def path() -> Path:
    if SOURCES.is_dir():
        return _checkout_build("shim", "libferry-{}.so", sorted(SOURCES.glob("*.[ch]")), build)
    return _packaged(PACKAGED, "the shim library")
