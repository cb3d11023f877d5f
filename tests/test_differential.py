"""Differential suite: the same operation sequences on a local directory and on a ferry
path give the same answers, errno values included, in both data modes.

One long-lived driver (tests/diff_driver.py) per mode runs under `ferry run`; the same
code runs each sequence on a local directory in this process.  Each sequence gets a fresh
subdirectory.  In cache mode the node hears of changes later than the program sees them,
so the last test also ends the drivers and compares the node's own tree with the local one.
FERRY_DIFF_EXAMPLES=N runs N generated sequences instead of 40 (for bug hunting).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODES, ferry_env, start_node
from diff_driver import run_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DRIVER = str(Path(__file__).with_name("diff_driver.py"))
MOUNT = "/mnt/diff"


class Driver:
    def __init__(self, mode: str, base: str, mounts: tuple[str, ...]) -> None:
        args = [sys.executable, "-m", "ferry", "run", "--mode", mode]
        for m in mounts:
            args += ["--mount", m]
        self.mode, self.base = mode, base
        self.proc = subprocess.Popen(args + ["--", sys.executable, DRIVER], env=ferry_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, name: str, ops: list) -> list:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"base": f"{self.base}/{name}", "ops": ops}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{self.mode} driver died: {self.proc.wait(10)}\n{self.proc.stderr.read()}")
        return json.loads(line)

    def finish(self) -> tuple[int, str]:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait(60)
        return rc, self.proc.stderr.read() if self.proc.stderr else ""


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.local = tmp / "local"
        self.local.mkdir()
        self.node = start_node(tmp / "export")
        self.drivers: dict[str, Driver] = {}
        for mode in MODES:
            (self.node.root / mode).mkdir()
        # Both path forms: the cache driver through a mount, the direct one through /REMOTE@.
        self.drivers["cache"] = Driver("cache", f"{MOUNT}/cache", (f"{MOUNT}={self.node.url}",))
        self.drivers["direct"] = Driver("direct", f"{self.node.remote}/direct", ())
        self.names = itertools.count()
        self.seqs: dict[str, list] = {}
        self.finished = False

    def check(self, ops: list) -> None:
        name = f"s{next(self.names)}"
        self.seqs[name] = ops
        want = run_sequence(str(self.local / name), ops)
        answers = {mode: d.run(name, ops) for mode, d in self.drivers.items()}
        for mode, got in answers.items():
            if got != want:
                lines = [f"{mode} mode differs from local in {name}:"]
                for op, w, g in zip(ops, want, got, strict=False):
                    mark = "  " if w == g else "!!"
                    lines.append(f"{mark} {op!r}: local {w!r}, ferry {g!r}")
                if len(got) != len(want):
                    lines.append(f"!! ferry answered {got!r}")
                raise AssertionError("\n".join(lines))

    def close(self) -> dict[str, tuple[int, str]]:
        if self.finished:
            return {}
        self.finished = True
        return {mode: d.finish() for mode, d in self.drivers.items()}

    def explain(self, text: str) -> str:
        """`text` followed by the sequences it names."""
        names = sorted(set(re.findall(r"\b(s\d+)\b", text)))
        return text + "".join(f"\n{n}: {self.seqs.get(n)!r}" for n in names)

    def stop(self) -> None:
        self.close()
        self.node.stop()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("diff"))
    yield h
    h.stop()


# ---------------------------------------------------------------- hand-written sequences

W, R, RW = "O_WRONLY", "O_RDONLY", "O_RDWR"
C, X, T, A = "O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND"

HAND = {
    "create-write-read": [
        ["open", "f", [RW, C], 0o640], ["write", 0, "hello world"], ["lseek", 0, 0, 0], ["read", 0, 5],
        ["read", 0, 100], ["read", 0, 10], ["fstat", 0], ["close", 0], ["stat", "f"], ["readall", "f"],
    ],
    "excl-trunc-append": [
        ["open", "f", [W, C, X], 0o600], ["write", 0, "abcdef"], ["close", 0],
        ["open", "f", [W, C, X]], ["open", "f", [W, A]], ["write", 1, "XY"], ["lseek", 1, 0, 0],
        ["write", 1, "Z"], ["close", 1], ["readall", "f"], ["open", "f", [W, T]], ["fstat", 2], ["close", 2],
        ["stat", "f"], ["readall", "f"],
    ],
    "seek-end-and-holes": [
        ["open", "f", [RW, C]], ["write", 0, "0123456789"], ["lseek", 0, -3, 2], ["read", 0, 10],
        ["lseek", 0, 5, 2], ["read", 0, 4], ["write", 0, "E"], ["fstat", 0], ["pread", 0, 20, 0],
        ["pwrite", 0, "P", 30], ["pread", 0, 5, 28], ["pread", 0, 5, 100], ["lseek", 0, -100, 1],
        ["lseek", 0, 0, 1], ["ftruncate", 0, 4], ["pread", 0, 10, 0], ["lseek", 0, 0, 2], ["close", 0],
        ["readall", "f"],
    ],
    "wrong-access-mode": [
        ["open", "f", [W, C]], ["read", 0, 4], ["write", 0, "x"], ["close", 0], ["open", "f", [R]],
        ["write", 1, "y"], ["ftruncate", 1, 0], ["read", 1, 4], ["close", 1], ["close", 1],
    ],
    "directories": [
        ["mkdir", "d"], ["mkdir", "d"], ["mkdir", "x/y"], ["open", "d/f", [W, C]], ["close", 0],
        ["rmdir", "d"], ["unlink", "d"], ["rmdir", "d/f"], ["mkdir", "d/f/g"], ["open", "d/f/g", [R]],
        ["listdir", "d"], ["listdir", "d/f"], ["listdir", "nope"], ["stat", "d"], ["lstat", "d/f"],
        ["open", "d", [W]], ["open", "d", [R, "O_DIRECTORY"]], ["open", "d/f", [R, "O_DIRECTORY"]],
        ["unlink", "d/f"], ["rmdir", "d"], ["listdir", ""],
    ],
    "renames": [
        ["mkdir", "d"], ["mkdir", "d/sub"], ["mkdir", "e"], ["open", "e/f", [W, C]], ["write", 0, "e-f"],
        ["close", 0], ["open", "a", [W, C]], ["write", 1, "aaa"], ["close", 1], ["open", "b", [W, C]],
        ["write", 2, "b"], ["close", 2],
        ["rename", "a", "b"], ["readall", "b"], ["stat", "a"],                  # onto an existing file
        ["rename", "d", "e"], ["rename", "d", "d/sub/x"], ["rename", "d", "d/x"],  # ENOTEMPTY, EINVAL x2
        ["rename", "b", "d"], ["rename", "d", "b"], ["rename", "nope", "z"],    # EISDIR, ENOTDIR, ENOENT
        ["rename", "e", "d/sub"], ["rename", "d", "d"], ["listdir", "d"], ["listdir", "d/sub"],
        ["rename", "d/sub", "sub2"], ["listdir", ""], ["readall", "d/sub/f"], ["readall", "sub2/f"],
    ],
    "symlinks": [
        ["open", "a", [W, C]], ["write", 0, "target"], ["close", 0], ["symlink", "a", "l"],
        ["symlink", "nothere", "dang"], ["symlink", "a", "l"], ["readlink", "l"], ["readlink", "a"],
        ["readlink", "nope"], ["stat", "l"], ["lstat", "l"], ["stat", "dang"], ["lstat", "dang"],
        ["readall", "l"], ["open", "l", [R, "O_NOFOLLOW"]], ["open", "dang", [W, C, X]],
        ["open", "dang", [W, C]], ["write", 1, "via"], ["close", 1], ["readall", "nothere"],
        ["mkdir", "d"], ["symlink", "../a", "d/up"], ["readall", "d/up"], ["symlink", "d", "ld"],
        ["listdir", "ld"], ["open", "ld/f", [W, C]], ["close", 2], ["listdir", "d"], ["unlink", "l"],
        ["lstat", "l"], ["stat", "a"], ["rmdir", "ld"], ["unlink", "ld"], ["symlink", "loop", "loop"],
        ["stat", "loop"], ["readlink", "loop"],
    ],
    "hard-links": [
        ["open", "a", [W, C]], ["write", 0, "one"], ["close", 0], ["link", "a", "b"], ["stat", "a"],
        ["link", "a", "b"], ["mkdir", "d"], ["link", "d", "dd"], ["link", "nope", "c"], ["readall", "b"],
        ["unlink", "a"], ["stat", "b"], ["readall", "b"],
    ],
    "truncate-unsent": [  # the node has not seen the file yet when truncate and chmod run
        ["open", "a", [RW, C]], ["write", 0, "hello"], ["truncate", "a", 3], ["symlink", "a", "l"],
        ["truncate", "l", 2], ["chmod", "l", 0o600], ["pread", 0, 9, 0], ["close", 0], ["readall", "a"],
        ["stat", "a"],
    ],
    "unsent-namespace": [  # renamed, linked and unlinked while still open and never uploaded
        ["open", "a", [W, C]], ["write", 0, "first "], ["rename", "a", "b"], ["write", 0, "second"],
        ["open", "t", [RW, C, X]], ["unlink", "t"], ["write", 1, "gone"], ["close", 1],
        ["open", "c", [W, C]], ["write", 2, "linked"], ["link", "c", "c2"], ["rename", "c", "c"],
        ["close", 2], ["close", 0], ["readall", "b"], ["readall", "c2"], ["stat", "a"], ["stat", "t"],
        ["listdir", ""],
    ],
    "attributes": [
        ["open", "f", [W, C], 0o644], ["close", 0], ["chmod", "f", 0o751], ["stat", "f"], ["access", "f", 1],
        ["chmod", "f", 0o600], ["access", "f", 1], ["access", "f", 6], ["access", "nope", 0],
        ["access_exists", "nope"], ["access_exists", "f/x"], ["utime", "f", 1_500_000_000, 1_600_000_000],
        ["mkdir", "d", 0o700], ["stat", "d"], ["chmod", "d", 0o755], ["stat", "d"],
        ["utime", "d", 1_000_000_000, 1_100_000_000], ["chmod", "nope", 0o600],
        ["truncate", "f", 7], ["stat", "f"], ["truncate", "d", 1], ["truncate", "nope", 1], ["readall", "f"],
        # mode 0 on a directory: what the replica uses to mark "not listed yet"
        ["chmod", "d", 0], ["stat", "d"], ["listdir", "d"], ["open", "d/x", [W, C]], ["close", 1],
        ["listdir", "d"], ["chmod", "d", 0o1777], ["stat", "d"], ["listdir", "d"],
    ],
}


@pytest.mark.parametrize("name", list(HAND))
def test_hand_written(harness, name):
    harness.check(HAND[name])


# ---------------------------------------------------------------- generated sequences

NAMES = ["a", "b", "d", "d/a", "d/e", "d/e/f", "l", "d/l", "e", "ld", "ld/a", "ld/e/g"]
TARGETS = ["a", "d", "d/a", "nothere", "../a", "l"]
ACCESS = [R, W, RW]
EXTRA = [C, X, T, A, "O_DIRECTORY", "O_NOFOLLOW"]

PROLOGUE = [
    ["open", "a", [RW, C]], ["write", 0, "hello\n"], ["mkdir", "d"], ["open", "d/a", [RW, C]],
    ["write", 1, "in d\n"], ["mkdir", "d/e"], ["symlink", "a", "l"], ["symlink", "d", "ld"],
]

name = st.sampled_from(NAMES)
slot = st.integers(0, 3)
data = st.text("xyz\n", min_size=0, max_size=12)
small = st.integers(0, 24)


def op(*parts):
    return st.tuples(*(p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts)).map(list)


flags = st.tuples(st.sampled_from(ACCESS), st.lists(st.sampled_from(EXTRA), unique=True, max_size=3)) \
    .map(lambda t: [t[0], *t[1]])

OPS = st.one_of(
    op("open", name, flags, st.sampled_from([0o644, 0o600, 0o755])),
    op("open", name, st.just([RW, C])),   # the common case, often enough to write into
    op("write", slot, data),
    op("read", slot, small),
    op("pread", slot, small, small),
    op("pwrite", slot, data, small),
    op("lseek", slot, st.integers(-5, 24), st.sampled_from([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])),
    op("ftruncate", slot, small),
    op("truncate", name, small),
    op("close", slot),
    op("fstat", slot),
    op("stat", name),
    op("lstat", name),
    op("mkdir", name, st.sampled_from([0o755, 0o700])),
    op("rmdir", name),
    op("unlink", name),
    op("rename", name, name),
    op("symlink", st.sampled_from(TARGETS), name),
    op("readlink", name),
    op("link", name, name),
    op("chmod", name, st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o1777])),
    op("access", name, st.sampled_from([os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK])),
    op("listdir", st.sampled_from(["", "d", "d/e", "a", "l"])),
    op("utime", name, st.integers(1_000_000_000, 1_700_000_000), st.integers(1_000_000_000, 1_700_000_000)),
    op("readall", name),
)


@settings(max_examples=int(os.environ.get("FERRY_DIFF_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_generated(harness, ops):
    """Each example runs locally and in both modes, after a prologue that gives the ops
    something to work on (two open files, a directory tree, a symlink)."""
    harness.check(PROLOGUE + ops)


# ---------------------------------------------------------------- the node's own tree


def tree(root: Path, linked: set[str] | None = None) -> dict[str, tuple]:
    """Every entry below root: type, mode bits, and content or link target.  Names in
    `linked` only say that a file is there: a cache-mode upload replaces the node's file
    through a temporary, so its other hard links keep the old content and attributes
    (docs/architecture.md, known limits)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st_ = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("d", stat.S_IMODE(st_.st_mode))
            elif linked is not None and rel in linked:
                out[rel] = ("f",)
            else:
                out[rel] = ("f", stat.S_IMODE(st_.st_mode), p.read_bytes(), st_.st_nlink)
    return out


def test_node_tree_matches(harness):
    """Runs last: the drivers exit (cache mode writes everything back) and the node's
    trees must then be the local one."""
    harness.check(HAND["renames"])  # at least one sequence even when run alone
    for mode, (rc, err) in harness.close().items():
        assert rc == 0, harness.explain(f"{mode} driver exited {rc}: {err}")
    full = tree(harness.local)
    linked = {k for k, v in full.items() if v[0] == "f" and v[3] > 1}
    for mode in MODES:
        local = tree(harness.local, linked if mode == "cache" else None)
        remote = tree(harness.node.root / mode, linked if mode == "cache" else None)
        diffs = [f"{k}: local {local.get(k)!r}, node {remote.get(k)!r}"
                 for k in sorted(set(local) | set(remote)) if local.get(k) != remote.get(k)]
        assert not diffs, harness.explain(f"{mode} mode: the node's tree differs:\n" + "\n".join(diffs))
