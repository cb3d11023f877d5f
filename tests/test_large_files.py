"""Files over 4 GiB and sparse files on ferry paths, in both data modes and both path forms:
offsets and sizes past 32 bits survive every layer, and holes stay holes on the node and in
the cache-mode replica (no gigabytes of zeros written, uploaded or kept in RAM)."""

from __future__ import annotations

import os

from conftest import Where

GIB = 1 << 30
FAR = 4 * GIB + GIB // 2  # 4.5 GiB

WRITE_FAR = f"""
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
assert os.pwrite(fd, b"far away", {FAR}) == 8
os.pwrite(fd, b"head", 0)
print(os.fstat(fd).st_size, os.pread(fd, 8, {FAR}), os.pread(fd, 4, {FAR} - 4))
os.close(fd)
with open(p, "rb") as f:
    f.seek({FAR} - 2)
    print(f.read(100), f.tell(), os.stat(p).st_size)
    print(os.lseek(f.fileno(), 0, os.SEEK_END), os.lseek(f.fileno(), {FAR} + 1, os.SEEK_DATA))
"""


def small_on_disk(path) -> bool:
    """Holes kept: far fewer blocks than the size would take."""
    return os.stat(path).st_blocks * 512 < 64 << 20


def test_over_4gib_sparse(where: Where, tmp_path):
    root = where.node.root
    prog = tmp_path / "far.py"
    prog.write_text(WRITE_FAR)
    big, t = where.path("big"), where.path("t")
    p = where.sh(f"python3 {prog} {big} && truncate -s 5G {t} && stat -c '%s' {t} {big} && "
                 f"tail -c 8 {big} && echo && dd if={big} bs=1 skip={FAR - 1} count=3 2>/dev/null")
    assert p.stdout.splitlines() == [
        f"{FAR + 8} b'far away' b'\\x00\\x00\\x00\\x00'",
        f"b'\\x00\\x00far away' {FAR + 8} {FAR + 8}",
        f"{FAR + 8} {FAR + 1}",
        str(5 * GIB), str(FAR + 8), "far away", "\0fa",
    ]
    assert (root / "big").stat().st_size == FAR + 8 and (root / "t").stat().st_size == 5 * GIB
    assert small_on_disk(root / "big") and small_on_disk(root / "t")
    with open(root / "big", "rb") as f:
        assert f.read(4) == b"head"
        f.seek(FAR)
        assert f.read() == b"far away"
    if where.mode == "direct":  # a new run reads it back from the node (cache mode would fetch 4.5 GiB)
        p = where.sh(f"stat -c %s {big}; tail -c 8 {big}; truncate -s {FAR + 3} {big}; tail -c 3 {big}")
        assert p.stdout == f"{FAR + 8}\nfar awayfar"
        assert (root / "big").stat().st_size == FAR + 3 and small_on_disk(root / "big")


def test_sparse_file_fetched_sparse(where: Where):
    """A sparse node file read in a new run: right bytes, and (cache mode) a sparse replica."""
    root = where.node.root
    size = 160 << 20
    with open(root / "sparse", "wb") as f:
        for off in (0, 100 << 20, size - 5):
            f.seek(off)
            f.write(b"data!")
    s = where.path("sparse")
    p = where.sh(f"cat {s} | tr -d '\\000'; echo; stat -c %s {s}; "
                 f"dd if={s} bs=1M skip=100 count=1 2>/dev/null | head -c 5; echo; "
                 f"stat -c %b {s}")
    lines = p.stdout.splitlines()
    assert lines[:3] == ["data!data!data!", str(size), "data!"]
    # cache mode: the replica's blocks (the fetch skipped the zeros); direct: the node's
    assert int(lines[3]) * 512 < 16 << 20
