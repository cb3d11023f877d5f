"""The *at calls answer relative to a ferry directory fd, to a local directory fd above the
mount (/mnt of /mnt/x, / of /REMOTE@...), and to the O_PATH fds of a walk down from there,
as they do on a local directory: tests/c/at_family.c prints one line per call, and the
transcripts match line for line, except that ferry refuses special files (EOPNOTSUPP)."""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import MOUNT_PREFIX, compile_c

SPECIAL = ("mknodat fifo", "mkfifoat")


@pytest.fixture(scope="module")
def at_prog(tmp_path_factory) -> Path:
    return compile_c(Path(__file__).with_name("c") / "at_family.c", tmp_path_factory.mktemp("at") / "at_family")


def run_local(prog: Path, root: Path) -> str:
    (root / "x" / "t").mkdir(parents=True)
    return subprocess.run([str(prog), str(root), "x/t"], capture_output=True, text=True, timeout=60,
                          check=True).stdout


def special_lines(transcript: str) -> tuple[list[str], list[str]]:
    """The transcript without the special-file lines, and those lines' answers."""
    rest, answers = [], []
    for line in transcript.splitlines():
        what, _, answer = line.partition(": ")
        if what in SPECIAL:
            answers.append(answer)
        else:
            rest.append(line)
    return rest, answers


def test_at_family_matches_local(where, at_prog, tmp_path):
    if where.form == "mount" and not os.path.isdir(os.path.dirname(MOUNT_PREFIX)):
        pytest.skip(f"no local {os.path.dirname(MOUNT_PREFIX)} to hold a directory fd above the mount")
    local, local_special = special_lines(run_local(at_prog, tmp_path / "local"))
    (where.node.root / "t").mkdir()
    target = where.path("t")
    above = "/" if where.form == "orfa" else os.path.dirname(MOUNT_PREFIX)
    p = where.run([str(at_prog), above, os.path.relpath(target, above)], timeout=120)
    got, got_special = special_lines(p.stdout)
    if got != local:
        diff = "\n".join(difflib.unified_diff(local, got, "local", f"ferry {where.mode} {where.form}", lineterm=""))
        pytest.fail(f"transcripts differ:\n{diff}\nstderr:\n{p.stderr}")
    assert local_special == ["0"] * 4
    assert got_special == ["EOPNOTSUPP"] * 4
    assert sorted(os.listdir(where.node.root / "t")) == []
