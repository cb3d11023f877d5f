"""A short live fuzzing campaign (tests/fuzz_live.py; the full one is `python tests/fuzz_live.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ferry_env

FUZZ = Path(__file__).with_name("fuzz_live.py")


def test_hostile_frames_crash_neither_node_nor_agent(tmp_path):
    p = subprocess.run([sys.executable, str(FUZZ), "--frames", "2000"], capture_output=True, text=True,
                       env=ferry_env(tmp_path), timeout=600)
    results = json.loads(p.stdout)
    assert [r["server"] for r in results] == ["node", "agent"], p.stderr
    for r in results:
        assert r["alive"], r  # still answers a well-formed request
        assert r["fds_after"] <= r["fds_before"] + 2, r  # nothing left open per connection
        assert r["rss_kib_after"] - r["rss_kib_before"] < 64 << 10, r
    assert p.returncode == 0, p.stderr
