"""The shim's reply parsing under libFuzzer (tests/c/fuzz_reply.c over shim/reply.c), and
hand-written hostile replies replayed through the same code built with gcc's sanitizers.

clang comes from scripts/install-test-deps.sh; without it these tests fail (they do not
skip): the fuzz target is part of what CI checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fuzz-shim.sh"
SEEDS = ROOT / "scripts" / "fuzz_shim_seeds.py"
SOURCES = [ROOT / "tests" / "c" / "fuzz_reply.c", ROOT / "shim" / "reply.c"]
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
# what each hostile reply must come to (fuzz_reply.c prints the shim's result per reply)
EIO, ENAMETOOLONG = -5, -36
EXPECTED = {"redirect_too_long": [ENAMETOOLONG], "bad_then_good": [EIO, 0]}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: run scripts/install-test-deps.sh (it installs clang for this test)")
    return path


def test_fuzzer_runs_clean(tmp_path):
    _need("clang")
    env = dict(os.environ, FUZZ_DIR=str(tmp_path / "fuzz"), FUZZ_SECONDS="20", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    log = tmp_path / "fuzz" / "fuzz.log"
    detail = r.stdout + r.stderr + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
    assert r.returncode == 0, detail
    m = re.search(r"fuzz-shim: (\d+) executions .*cov: (\d+), ft: (\d+).* (\d+) crashes", r.stdout)
    assert m, detail
    execs, cov, _ft, crashes = map(int, m.groups())
    assert execs >= 10_000, detail
    assert cov > 50, detail  # it went past the header checks
    assert crashes == 0
    assert not list((tmp_path / "fuzz").glob("crash-*"))


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Path:
    gcc = _need(os.environ.get("CC", "gcc"))
    out = tmp_path_factory.mktemp("replay") / "fuzz_reply_replay"
    subprocess.run([gcc, "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", *SAN, "-DFUZZ_STANDALONE",
                    f"-I{ROOT / 'shim'}", "-o", str(out), *map(str, SOURCES)], check=True)
    return out


def _inputs(kind: str, where: Path) -> list[Path]:
    subprocess.run([sys.executable, str(SEEDS), kind, str(where)], check=True, capture_output=True)
    return sorted(where.iterdir())


def _results(replay: Path, f: Path) -> list[int]:
    r = subprocess.run([str(replay), str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, \
        f"{f.name}: rc {r.returncode}\n{r.stderr[-3000:]}"
    return [int(x) for x in re.findall(r"^reply kind \d+: (-?\d+)", r.stdout, re.M)]


def test_hostile_replies_are_eio(replay, tmp_path):
    """A count past the tail, a string length past the end, entries announced over an empty
    tail, lengths that wrap 32-bit arithmetic, statuses that are no errno, bad redirects:
    each one EIO (no sanitizer report, no data), and the stream stays in step."""
    files = _inputs("hostile", tmp_path)
    assert len(files) >= 30
    for f in files:
        assert _results(replay, f) == EXPECTED.get(f.name, [EIO]), f.name


def test_valid_replies_parse(replay, tmp_path):
    """The seeds (valid replies from the Python codec) come out as the agent meant them."""
    for f in _inputs("seeds", tmp_path):
        got = _results(replay, f)
        assert got and all(rc in (0, -2, -0x10000) for rc in got), (f.name, got)
        if f.name == "stream":
            assert len(got) == 19  # every reply of the stream, none lost
