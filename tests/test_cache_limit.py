"""The cache's size: fetched contents are kept least-recently-used within FERRY_CACHE_SIZE,
and a full replica file system makes room by evicting clean copies; a program sees ENOSPC
only when what fills it is not yet on the node."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ferry_env, ferry_run, node_stats

MOUNT = "/mnt/ferry-cache-limit"
MiB = 1 << 20


def _fetched_bytes(replica_root) -> int:
    """Bytes the replica's files hold (placeholders are holes: they hold none)."""
    total = 0
    for dirpath, _, files in os.walk(replica_root):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def test_fetched_contents_stay_within_the_limit_least_recently_used_first(node, other_host):
    for i in range(10):
        (node.root / f"f{i}").write_bytes(bytes([65 + i]) * MiB)
    env = {**other_host, "FERRY_CACHE_SIZE": "4M"}
    mount = (f"{MOUNT}={node.url}",)
    # Read all ten (4 MiB kept), keeping f0 in use between the others.
    script = "; ".join(f"cat {MOUNT}/f{i} {MOUNT}/f0 > /dev/null" for i in range(1, 10))
    ferry_run(["sh", "-c", script], mounts=mount, env_extra=env)
    used = _fetched_bytes(other_host["FERRY_CACHE_DIR"])
    assert 3 * MiB <= used <= 4 * MiB + (64 << 10), used
    # The most recently used stayed (f0, f9); an evicted one is fetched again, intact.
    out = ferry_run(["sh", "-c", f"head -c 1 {MOUNT}/f0; head -c 1 {MOUNT}/f9; head -c 1 {MOUNT}/f1; "
                                 f"cmp {MOUNT}/f1 {node.root}/f1 && echo same"], mounts=mount, env_extra=env)
    assert out.stdout == "AJBsame\n"
    # `ferry agent status` says how much is held, of what limit.
    p = subprocess.run([sys.executable, "-m", "ferry", "run", "--mount", mount[0], "--", sys.executable, "-m",
                        "ferry", "agent", "status", "--json"], env={**ferry_env(), **env}, capture_output=True,
                       text=True, timeout=60, check=True)
    (session,) = [s for s in json.loads(p.stdout)["sessions"] if not s["ended"]]
    assert session["cache"]["limit"] == 4 * MiB and 0 < session["cache"]["used"] <= 4 * MiB + (64 << 10)


def test_a_bad_cache_size_is_named(node, other_host):
    p = ferry_run(["true"], mounts=(f"{MOUNT}={node.url}",), env_extra={**other_host, "FERRY_CACHE_SIZE": "lots"},
                  check=False)
    assert p.returncode != 0 and "FERRY_CACHE_SIZE='lots'" in p.stderr, p.stderr


@pytest.fixture
def small_replica_fs(tmp_path):
    """A 12 MiB tmpfs for the replica (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_cache_evicts_clean_copies_and_says_enospc_only_for_unsent_data(node, other_host, small_replica_fs):
    for i in range(8):
        (node.root / f"clean{i}").write_bytes(b"c" * MiB)
    env = {**other_host, "FERRY_CACHE_DIR": str(small_replica_fs), "FERRY_CACHE_SIZE": "1G"}  # only the fs limits
    mount = (f"{MOUNT}={node.url}",)
    ferry_run(["sh", "-c", f"cat {MOUNT}/clean* > /dev/null"], mounts=mount, env_extra=env)
    assert _fetched_bytes(small_replica_fs) >= 7 * MiB  # the replica is mostly clean copies now
    # 6 MiB of new data does not fit beside them: clean copies make way, the write succeeds.
    # (dd writes with write(2), whose ENOSPC the shim turns into a retry after eviction)
    ferry_run(["dd", "if=/dev/zero", f"of={MOUNT}/new", "bs=64k", "count=96", "status=none"], mounts=mount,
              env_extra=env)
    assert (node.root / "new").stat().st_size == 6 * MiB
    # 20 MiB cannot fit whatever goes: the program is told, nothing already sent is lost.
    p = ferry_run(["dd", "if=/dev/zero", f"of={MOUNT}/huge", "bs=64k", "count=320", "status=none"], mounts=mount,
                  env_extra=env, check=False)
    assert p.returncode != 0 and "No space left on device" in p.stderr, p.stderr
    assert (node.root / "new").stat().st_size == 6 * MiB
    assert all((node.root / f"clean{i}").read_bytes() == b"c" * MiB for i in range(8))
    assert ferry_run(["sh", "-c", f"cmp {MOUNT}/clean3 {node.root}/clean3 && echo same"], mounts=mount,
                     env_extra=env).stdout == "same\n"


def test_a_cache_outlives_its_agent_and_is_revalidated_by_the_next(node, other_host):
    """`ferry agent stop` leaves the cache for the next agent: contents it still holds are not
    fetched again, and what changed meanwhile on the node is."""
    for i in range(5):
        (node.root / f"k{i}").write_text(f"kept {i}\n" * 1000)
    mount = (f"{MOUNT}={node.url}",)
    cat = ["sh", "-c", f"cat {MOUNT}/k*"]
    first = ferry_run(["sh", "-c", f"echo mine > {MOUNT}/w; cat {MOUNT}/k*"], mounts=mount,
                      env_extra=other_host).stdout
    subprocess.run([sys.executable, "-m", "ferry", "agent", "stop"], env={**ferry_env(), **other_host},
                   capture_output=True, timeout=60, check=True)
    (node.root / "k3").write_text("changed while no agent ran\n")
    node_stats(node, reset=True)
    second = ferry_run(cat, mounts=mount, env_extra=other_host).stdout
    assert second == first.replace("kept 3\n" * 1000, "changed while no agent ran\n")
    asked = node_stats(node)["requests"]
    assert asked.get("READ", 0) == 1, asked  # k3 only
    assert not {op for op in asked if op.startswith("PUT")}, asked  # w, written before, is not sent again
