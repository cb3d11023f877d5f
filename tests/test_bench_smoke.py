"""The bench harness itself, on one tiny workload: it runs, and reports what it measured.
(No timing is asserted here: figures belong in bench/results/, not in tests.)"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import ferry_env

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_startup_writes_a_report(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "startup", "--repeats", "1",
                        "--out", str(out)], cwd=REPO, env=ferry_env(), capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    variants = {r["variant"] for r in rows if r["workload"] == "startup"}
    assert {"local", "ferry-cache", "ferry-direct"} <= variants
    assert all(not r.get("error") for r in rows), [r["error"] for r in rows if r.get("error")]
    assert "| startup |" in (out / "REPORT.md").read_text()
