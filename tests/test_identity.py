"""Stable identity in stat: a ferry file reports the node's inode number, one st_dev per
mount and, while unchanged, the node's ctime — the same in every run and through every
stat call (stat, fstat, statx) — so tools that compare stat results across runs (git's
index, make, rsync -u, tar) see an unchanged file as unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import MODES, MOUNT_PREFIX, ferry_run, node_stats

PROBE = r"""
import json, os, sys
out = {}
for name in sys.argv[1:]:
    st = os.stat(name)
    fd = os.open(name, os.O_RDONLY)
    fs = os.fstat(fd)
    os.close(fd)
    out[name] = [st.st_ino, st.st_dev, st.st_ctime_ns, st.st_mtime_ns, fs.st_ino, fs.st_dev, fs.st_ctime_ns]
print(json.dumps(out))
"""


def probe(mode: str, node, *names: str) -> dict:
    m = MOUNT_PREFIX
    p = ferry_run([sys.executable, "-c", PROBE, *[f"{m}/{n}" for n in names]], mode=mode,
                  mounts=(f"{m}={node.url}",))
    return {k[len(m) + 1:]: v for k, v in json.loads(p.stdout).items()}


@pytest.mark.parametrize("mode", MODES)
def test_a_node_file_looks_the_same_in_every_run(node, mode):
    (node.root / "d").mkdir()
    (node.root / "d" / "f").write_text("content\n")
    first, second = probe(mode, node, "d", "d/f"), probe(mode, node, "d", "d/f")
    assert first == second
    for name in ("d", "d/f"):
        real = os.stat(node.root / name)
        ino, dev, ctime, mtime, f_ino, f_dev, f_ctime = first[name]
        assert ino == real.st_ino and mtime == real.st_mtime_ns, (name, first[name])
        assert ctime == real.st_ctime_ns, (name, first[name])
        assert (f_ino, f_dev, f_ctime) == (ino, dev, ctime), (name, first[name])  # fstat says what stat says
    assert first["d"][1] == first["d/f"][1]  # one device per mount


def test_a_file_made_in_a_run_keeps_its_inode_number_through_its_upload(node):
    """Its number has the top bit set (never one of the node's), and stays while it exists
    in that run, even once its upload replaced the node's inode (sqlite checks)."""
    m = MOUNT_PREFIX
    script = ("import os, subprocess, sys\n"
              f"open('{m}/new', 'w').write('x')\n"
              f"a = os.stat('{m}/new').st_ino\n"
              f"subprocess.run([sys.executable, '-m', 'ferry', 'sync'], check=True)\n"
              f"b = os.stat('{m}/new').st_ino\n"
              "print(a == b, a >> 63)\n")
    p = ferry_run([sys.executable, "-c", script], mounts=(f"{m}={node.url}",))
    assert p.stdout == "True 1\n", p.stdout + p.stderr
    assert probe("cache", node, "new")["new"][0] == os.stat(node.root / "new").st_ino  # the next run: the node's


def test_statx_agrees_with_stat(node):
    (node.root / "f").write_text("x")
    m = MOUNT_PREFIX
    code = (r"#define _GNU_SOURCE" "\n" r"#include <fcntl.h>" "\n" r"#include <stdio.h>" "\n"
            r"#include <sys/stat.h>" "\n" r"#include <sys/sysmacros.h>" "\n"
            "int main(int c, char **v) { (void)c; struct statx x; struct stat s; int fd = open(v[1], O_RDONLY);\n"
            "  if (statx(AT_FDCWD, v[1], 0, STATX_BASIC_STATS, &x) || stat(v[1], &s)) return 1;\n"
            "  struct statx y; if (statx(fd, \"\", AT_EMPTY_PATH, STATX_BASIC_STATS, &y)) return 2;\n"
            "  printf(\"%d %d %d\\n\", x.stx_ino == s.st_ino && y.stx_ino == s.st_ino,\n"
            "         makedev(x.stx_dev_major, x.stx_dev_minor) == s.st_dev,\n"
            "         x.stx_ctime.tv_sec == s.st_ctim.tv_sec && y.stx_ctime.tv_nsec == s.st_ctim.tv_nsec);\n"
            "  return 0; }\n")
    from conftest import compile_c
    exe = compile_c(code, node.root.parent / "statx_probe")
    p = ferry_run([str(exe), f"{m}/f"], mounts=(f"{m}={node.url}",))
    assert p.stdout == "1 1 1\n", p.stdout + p.stderr


def test_git_status_in_a_second_run_reads_no_file(node):
    """The repository lives on the node; the first `git status` may refresh its index (with
    what ferry reports), the second finds every file unchanged and opens none of them."""
    repo = node.root / "repo"
    repo.mkdir()
    for i in range(50):
        (repo / f"f{i}.txt").write_text(f"file {i}\n")
    git = ["git", "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    time.sleep(1.1)  # past git's racy window: files as new as the index are hashed again anyway
    m = MOUNT_PREFIX
    status = ["git", "-C", f"{m}/repo", "status", "--porcelain"]
    assert ferry_run(status, mounts=(f"{m}={node.url}",)).stdout == ""
    node_stats(node, reset=True)
    assert ferry_run(status, mounts=(f"{m}={node.url}",)).stdout == ""
    got = node_stats(node, reset=True)["requests"]
    assert got.get("OPEN", 0) < 10, got  # git's own HEAD, config, index, refs: no work-tree file
    assert got.get("READ", 0) <= got.get("OPEN", 0), got  # a small file is one READ


def test_tar_of_files_written_in_the_run_sees_no_change(node):
    """tar compares stat before and fstat after reading each file: they must agree."""
    m = MOUNT_PREFIX
    script = (f"mkdir -p {m}/t && for i in 1 2 3; do echo $i > {m}/t/$i; done && "
              f"tar cf {m}/t.tar -C {m} t && tar tf {m}/t.tar | sort | tr '\\n' ' '")
    p = ferry_run(["sh", "-c", script], mounts=(f"{m}={node.url}",))
    assert p.stdout == "t/ t/1 t/2 t/3 " and "changed" not in p.stderr, p.stderr


def test_a_replica_file_changed_behind_the_agent_is_fetched_again(node):
    """Truncated or rewritten in the replica by something that is not a program of the run
    (the shim not loaded): the next open notices and fetches the node's copy again."""
    (node.root / "f").write_text("the node's content\n")
    m = MOUNT_PREFIX
    script = (f"cat {m}/f && env -u LD_PRELOAD truncate -s 3 \"$FERRY_CACHE{m}/f\" && cat {m}/f && "
              f"env -u LD_PRELOAD sh -c 'echo forged > \"$FERRY_CACHE{m}/f\"' && cat {m}/f")
    p = ferry_run(["sh", "-c", script], mounts=(f"{m}={node.url}",))
    assert p.stdout == "the node's content\n" * 3, p.stdout + p.stderr
    assert (node.root / "f").read_text() == "the node's content\n"


def test_make_in_a_second_run_rebuilds_nothing(node):
    (node.root / "a.c").write_text("int main(void) { return 0; }\n")
    (node.root / "Makefile").write_text("a: a.o\n\tcc -o a a.o\na.o: a.c\n\tcc -c a.c\n")
    m = MOUNT_PREFIX
    first = ferry_run(["make", "-C", f"{m}"], mounts=(f"{m}={node.url}",))
    assert "cc -c a.c" in first.stdout, first.stdout
    second = ferry_run(["make", "-C", f"{m}"], mounts=(f"{m}={node.url}",))
    assert "cc" not in second.stdout and "is up to date" in second.stdout, second.stdout
