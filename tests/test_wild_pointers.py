"""Issue 10: a wild pointer gets the kernel's EFAULT under ferry, as without it, instead of
a SIGSEGV in the shim; and a program's own SIGSEGV/SIGBUS handling is left as it is.

tests/c/wild_pointers.c passes 0xDEADC0DE as a path, and as a buffer the call fills or
reads, each call in a child of its own (a crash is one line of the transcript); the
transcript on a ferry directory and on a local one under ferry must be the one a run on a
local directory without ferry prints.  tests/c/wild_signals.c installs handlers (SA_SIGINFO,
signal(), SA_RESETHAND, SA_NODEFER, an altstack, SIG_IGN across exec) and faults; its
transcript must not change under ferry either."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest
from conftest import MODES, MOUNT_PREFIX, compile_c, ferry_run

C = Path(__file__).with_name("c")


@pytest.fixture(scope="module")
def wild(tmp_path_factory) -> Path:
    return compile_c(C / "wild_pointers.c", tmp_path_factory.mktemp("wild") / "wild_pointers")


@pytest.fixture(scope="module")
def signals(tmp_path_factory) -> Path:
    return compile_c(C / "wild_signals.c", tmp_path_factory.mktemp("wild") / "wild_signals")


@pytest.fixture(scope="module")
def native(wild, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("native")
    p = subprocess.run([str(wild), str(d)], capture_output=True, text=True, timeout=120, check=True)
    assert "open: EFAULT" in p.stdout.splitlines()
    return p.stdout


def same(expected: str, got: subprocess.CompletedProcess, what: str) -> None:
    assert got.returncode == 0, f"{what} exited {got.returncode}\n{got.stderr}"
    if got.stdout != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), got.stdout.splitlines(), "without ferry", what,
                                              lineterm=""))
        pytest.fail(f"transcripts differ:\n{diff}\nstderr:\n{got.stderr}")


def test_wild_pointers_on_ferry_paths(where, wild, native):
    (where.node.root / "t").mkdir()
    same(native, where.run([str(wild), where.path("t")], check=False), f"ferry {where.mode} {where.form}")


@pytest.mark.parametrize("mode", MODES)
def test_wild_pointers_on_local_paths(mode, node, wild, native, tmp_path):
    d = tmp_path / "local"
    d.mkdir()
    p = ferry_run([str(wild), str(d)], mode=mode, mounts=(f"{MOUNT_PREFIX}={node.url}",), check=False)
    same(native, p, f"ferry {mode}, local dir")


@pytest.mark.parametrize("mode", MODES)
def test_programs_own_fault_handling_unchanged(mode, signals):
    expected = subprocess.run([str(signals)], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "killed by signal 11" in expected and "addr=0xdeadc0de" in expected
    same(expected, ferry_run([str(signals)], mode=mode, check=False), f"ferry {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_a_crash_still_crashes(mode, tmp_path):
    prog = compile_c("int main(void) { return *(volatile int *)0xDEADC0DE; }\n", tmp_path / "crash")
    assert subprocess.run([str(prog)], timeout=30).returncode == -11
    assert ferry_run([str(prog)], mode=mode, check=False).returncode == 128 + 11  # ferry run's code for it
