"""The bench harness itself, on one tiny workload: it runs, and reports what it measured.
(No timing is asserted here: figures belong in bench/results/, not in tests.)"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import ferry_env

REPO = Path(__file__).resolve().parents[1]


def bench(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--quick", "--repeats", "1", "--out", str(out), *args],
                          cwd=REPO, env=ferry_env(), capture_output=True, text=True, timeout=300, check=False)


def test_bench_quick_startup_writes_a_report(tmp_path):
    out = tmp_path / "results"
    p = bench(out, "--only", "startup", "--peers", "none")
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    variants = {r["variant"] for r in rows if r["workload"] == "startup"}
    assert {"local", "ferry-cache", "ferry-direct"} <= variants
    assert all(not r.get("error") for r in rows), [r["error"] for r in rows if r.get("error")]
    report = (out / "REPORT.md").read_text()
    assert "### Startup" in report and "| true | ferry-direct |" in report
    # the C front (the installed `ferry`) with and without a running agent
    assert "| ferry run -- true, C front, agent running | ferry-cache |" in report
    assert "| ferry run -- true, C front, no agent running | ferry-cache |" in report


def test_bench_with_one_peer_has_its_row_or_says_why_not(tmp_path):
    """sshfs when this machine has it (never installed by the test), else a stated reason."""
    out = tmp_path / "results"
    p = bench(out, "--only", "smallfiles", "--peers", "sshfs", "--no-install")
    assert p.returncode == 0, p.stderr
    data = json.loads((out / "results.json").read_text())
    report = (out / "REPORT.md").read_text()
    variants = {r["variant"] for r in data["rows"]}
    assert {"local", "ferry-cache", "ferry-direct"} <= variants
    assert variants <= {"local", "ferry-cache", "ferry-direct", "sshfs"}
    if "sshfs" in variants:
        assert "sshfs" in data["meta"]["peers"]
        assert all(not r.get("error") for r in data["rows"]), [r["error"] for r in data["rows"] if r.get("error")]
        ferry = next(r for r in data["rows"] if r["variant"] == "ferry-cache" and not r["detail"])
        assert "× sshfs" in report and ferry["median"] > 0
    else:
        why = data["meta"]["peer_skips"]["sshfs"]
        assert why and f"**sshfs: skipped** — {why}" in report
