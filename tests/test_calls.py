"""Every call issue 4 lists, called by name from one C program (tests/c/calls.c): on a local
directory and on a ferry path in each mode, the transcripts must be the same line for line."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest
from conftest import compile_c

C_DIR = Path(__file__).parent / "c"


@pytest.fixture(scope="module")
def calls_prog(tmp_path_factory) -> Path:
    return compile_c(C_DIR / "calls.c", tmp_path_factory.mktemp("calls") / "calls", "-Wno-deprecated-declarations")


@pytest.fixture(scope="module")
def local_transcript(calls_prog, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("local") / "t"
    d.mkdir()
    p = subprocess.run([str(calls_prog), str(d)], capture_output=True, text=True, timeout=60, check=True)
    return p.stdout


def test_calls_match_local(where, calls_prog, local_transcript):
    (where.node.root / "t").mkdir()
    p = where.run([str(calls_prog), where.path("t")], timeout=120)
    if p.stdout != local_transcript:
        diff = "\n".join(difflib.unified_diff(local_transcript.splitlines(), p.stdout.splitlines(),
                                              "local", f"ferry {where.mode} {where.form}", lineterm=""))
        pytest.fail(f"transcripts differ:\n{diff}\nstderr:\n{p.stderr}")
