"""200 concurrent clients against one node, short (bench/load.py; the full run is
`PYTHONPATH=src python -m bench.load`, figures in bench/results/load.md).  Behaviour only:
timings belong to the bench."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ferry_env, start_node

REPO = Path(__file__).resolve().parents[1]
CLIENTS, FILES = 200, 5


def requests_per_client(files: int) -> int:
    """What bench/load.py's client sends: 4 MKDIR; per even file a PUT, per odd one
    OPEN+WRITE+CLOSE; LISTDIR of the 4 dirs and a STAT per entry (files + 3 subdirs);
    OPEN+READ+CLOSE per file; UNLINK per file; 4 RMDIR."""
    puts, opened = (files + 1) // 2, files // 2
    return 4 + puts + 3 * opened + 4 + (files + 3) + 3 * files + files + 4


def test_200_clients_at_once_finish_with_their_data_and_the_node_gives_back_what_they_took(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench.load", "--clients", str(CLIENTS), "--files", str(FILES),
                        "--no-baseline", "--out", str(tmp_path), "--tmp", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, env=ferry_env(tmp_path), timeout=300)
    assert (tmp_path / "load.json").exists(), p.stderr
    r = json.loads((tmp_path / "load.json").read_text())["loaded"]
    assert r["clients"] == CLIENTS and r["finished"] == CLIENTS, (r["finished"], r["errors"][:5])
    assert r["errors"] == [], r["errors"][:5]
    assert r["mismatches"] == [], r["mismatches"][:5]
    assert r["requests"] == CLIENTS * requests_per_client(FILES), r["requests"]
    assert r["left_count"] == 0, r["left_in_export"]  # every tree removed, no upload temporaries left
    assert r["node_alive"]
    fds = r["node_fds"]
    assert fds["connected"] - fds["before"] >= CLIENTS, fds  # the node held them all at once
    assert fds["after"] <= fds["before"] + 2, fds  # and closed every socket and file afterwards
    rss = r["node_rss_kib"]
    assert r["node_samples"] >= 3, r["node_samples"]
    assert rss["peak"] - rss["before"] < 200 << 10, rss  # KiB: ~256 KiB of read buffer per connection
    assert rss["after"] - rss["before"] < 32 << 10, rss  # given back once they are gone
    assert p.returncode == 0, p.stderr


def test_the_node_listens_with_a_backlog_for_hundreds_of_connects_at_once(tmp_path):
    """asyncio's default backlog (100) overflowed with 1 000 clients connecting at once (bench/load.py),
    each overflow a 1 s SYN retransmit; `ss` shows a listening socket's backlog as its Send-Q."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("needs ss (iproute2)")
    node = start_node(tmp_path / "export")
    try:
        port = node.url.rsplit(":", 1)[1]
        out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
        backlog = int(out.split()[2])
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert backlog == min(4096, somaxconn), out
    finally:
        node.stop()
