"""Where libferry.so is, building it from `shim/` when running from a source checkout.

`pip install` builds the shim into the package (see setup.py); a checkout used through
PYTHONPATH gets it built here on first use, into the user cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "_lib" / "libferry.so"
SOURCES = Path(__file__).resolve().parents[2] / "shim"
CFLAGS = ["-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
          "-Wno-nonnull-compare"]


def build(out: Path, sources: Path = SOURCES) -> Path:
    files = sorted(str(p) for p in sources.glob("*.c"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = [os.environ.get("CC", "gcc"), *CFLAGS, "-o", str(tmp), *files, "-ldl", "-lpthread"]
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        sys.exit("ferry: building the shim needs a C compiler (gcc): install it, e.g. apt-get install gcc")
    except subprocess.CalledProcessError:
        sys.exit(f"ferry: building the shim from {sources} failed (compiler errors above)")
    tmp.replace(out)
    return out


def path() -> Path:
    if SOURCES.is_dir():
        # A checkout: rebuild whenever a source changed, so tests never run a stale shim.
        digest = hashlib.sha256()
        for p in sorted(SOURCES.glob("*.[ch]")):
            digest.update(p.name.encode() + p.read_bytes())
        import platformdirs  # here, so setup.py can load this file before dependencies are installed

        out = Path(platformdirs.user_cache_dir("ferry")) / "shim" / f"libferry-{digest.hexdigest()[:16]}.so"
        return out if out.exists() else build(out)
    if PACKAGED.exists():
        return PACKAGED
    sys.exit(f"ferry: the shim library is missing ({PACKAGED}); reinstall ferry with `pip install .`")
