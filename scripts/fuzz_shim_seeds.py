"""Seeds for tests/c/fuzz_reply.c, and the hostile replies tests/test_fuzz_shim.py replays.

An input is a stream of (selector byte, reply frame) pairs; the selector says which call
waits for the reply (see one_reply in fuzz_reply.c: kind = sel % 12, and for READ/WRITE
sel >> 4 says how much was asked).  Valid frames come from the Python codec, so the seeds
are exactly what the agent sends.

    python scripts/fuzz_shim_seeds.py seeds DIR     # valid replies, one input each + one long stream
    python scripts/fuzz_shim_seeds.py hostile DIR   # the regression set
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ferry.protocol import codec, spec  # noqa: E402

# selector kinds (fuzz_reply.c)
STAT, OPEN, WRITE, LSEEK, GETLK, STATFS, ASK, READ, LISTDIR, READLINK, GETXATTR, LISTXATTR = range(12)

HDR = struct.Struct("<IiQ")
U32 = struct.Struct("<I")


def attr(mode: int = stat.S_IFREG | 0o644, size: int = 5) -> codec.Attr:
    return codec.Attr(7, mode, 1, 1000, 1000, 0, size, 4096, 8, 1, 2, 3)


def sel(kind: int, amount: int = 0) -> bytes:
    return bytes([(amount << 4 | kind) if kind < 12 else kind])


def entries_bytes(entries: list[codec.Entry]) -> bytes:
    return codec.pack_parts([("entries", "entries")], {"entries": entries})[0]


def frame(status: int, payload: bytes, length: int | None = None) -> bytes:
    return HDR.pack(len(payload) if length is None else length, status, 1) + payload


def seeds() -> dict[str, bytes]:
    ents = [codec.Entry(b"a.txt", b"", attr()), codec.Entry(b"sub", b"", attr(stat.S_IFDIR | 0o755, 0)),
            codec.Entry(b"ln", b"../a.txt", attr(stat.S_IFLNK | 0o777, 8))]
    out = {
        "stat": sel(STAT) + codec.pack_reply("STAT", 1, attr=attr()),
        "open": sel(OPEN) + codec.pack_reply("OPEN", 1, handle=3, attr=attr()),
        "write": sel(WRITE, 1) + codec.pack_reply("WRITE", 1, count=4096),
        "lseek": sel(LSEEK) + codec.pack_reply("LSEEK", 1, offset=100),
        "getlk": sel(GETLK) + codec.pack_reply("GETLK", 1, type=spec.LOCK_WRITE, start=0, len=10, pid=42),
        "getlk_unlocked": sel(GETLK) + codec.pack_reply("GETLK", 1, type=spec.LOCK_UNLOCK, start=0, len=0, pid=0),
        "statfs": sel(STATFS) + codec.pack_reply("STATFS", 1, bsize=4096, frsize=4096, blocks=10, bfree=5,
                                                  bavail=5, files=100, ffree=50, favail=50, namemax=255),
        "ask_ok": sel(ASK) + codec.pack_reply("CACHE_OPEN", 1),
        "ask_enoent": sel(ASK) + codec.pack_error(1, 2),
        "read": sel(READ, 1) + codec.pack_reply("READ", 1, data=b"hello world"),
        "read_eof": sel(READ, 1) + codec.pack_reply("READ", 1, data=b""),
        "listdir": sel(LISTDIR) + codec.pack_reply("LISTDIR", 1, entries=ents),
        "listdir_empty": sel(LISTDIR) + codec.pack_reply("LISTDIR", 1, entries=[]),
        "readlink": sel(READLINK) + codec.pack_reply("LISTDIR", 1, entries=ents),
        "getxattr": sel(GETXATTR) + codec.pack_reply("GETXATTR", 1, value=b"some value"),
        "listxattr": sel(LISTXATTR) + codec.pack_reply("LISTXATTR", 1, names=b"user.a\0user.bb\0"),
        "redirect": sel(STAT) + codec.pack_redirect(1, 0, b"/tmp/elsewhere/x"),
        "redirect_new": sel(ASK) + codec.pack_redirect(1, 1, b"/REMOTE@127.0.0.1:1/b"),
        "redirect_listdir": sel(LISTDIR) + codec.pack_redirect(1, 0, b"/"),
    }
    out["stream"] = b"".join(out.values())  # one connection's worth, replies back to back
    return out


def hostile() -> dict[str, bytes]:
    """Replies that break the protocol; each must be EIO (or a clean error), never a crash
    or data the agent did not mean."""
    a = codec.ATTR_STRUCT.pack(*attr())
    one = U32.pack(1) + b"x" + U32.pack(0) + a  # one entry "x"
    return {
        # a count larger than the tail: 2^32-1 entries announced, one present
        "listdir_count_past_tail": sel(LISTDIR) + frame(0, U32.pack(0xFFFFFFFF) + one),
        "listdir_count_two_one_present": sel(LISTDIR) + frame(0, U32.pack(2) + one),
        # entries announced, zero-length tail
        "listdir_entries_no_tail": sel(LISTDIR) + frame(0, U32.pack(5)),
        "readlink_entries_no_tail": sel(READLINK) + frame(0, U32.pack(5)),
        # a string length past the end of the tail
        "listdir_name_past_end": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(1000) + b"abc"),
        "listdir_target_past_end": sel(READLINK) + frame(0, U32.pack(1) + U32.pack(1) + b"x" + U32.pack(77) + a),
        # an entry length that overflows 32-bit pointer arithmetic (p + n wraps)
        "listdir_name_len_wraps": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(0xFFFFFFF0) + b"x" * 100),
        "listdir_target_len_wraps": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(1) + b"x"
                                                          + U32.pack(0xFFFFFFFF) + a),
        # names no directory holds: too long for d_name / d_reclen, with '/', "..", empty
        "listdir_name_70000": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(70000) + b"n" * 70000
                                                    + U32.pack(0) + a),
        "listdir_name_slash": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(4) + b"../x" + U32.pack(0) + a),
        "listdir_name_dotdot": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(2) + b".." + U32.pack(0) + a),
        "listdir_name_nul": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(3) + b"a\0b" + U32.pack(0) + a),
        "listdir_target_nul": sel(READLINK) + frame(0, U32.pack(1) + U32.pack(1) + b"l" + U32.pack(3) + b"/\0x" + a),
        "listdir_name_empty": sel(LISTDIR) + frame(0, U32.pack(1) + U32.pack(0) + U32.pack(0) + a),
        "listdir_trailing_bytes": sel(LISTDIR) + frame(0, U32.pack(1) + one + b"junk"),
        # a reply length past the frame limit, and one past the bytes that follow
        "length_4g": sel(LISTDIR) + frame(0, U32.pack(0), length=0xFFFFFFFF),
        "length_past_stream": sel(STAT) + frame(0, a, length=5000),
        "short_fixed_part": sel(OPEN) + frame(0, a[:10]),
        # statuses that are no errno: -FY_EREDIRECT, INT_MIN, positive
        "status_eredirect": sel(ASK) + frame(-0x10000, b""),
        "status_int_min": sel(STAT) + frame(-0x80000000, b""),
        "status_positive": sel(ASK) + frame(7, b""),
        # redirects: path length past the payload, wrapping, relative, NUL inside, bad which
        "redirect_len_past_end": sel(STAT) + frame(1, U32.pack(0) + U32.pack(100) + b"/abc"),
        "redirect_len_wraps": sel(STAT) + frame(1, U32.pack(0) + U32.pack(0xFFFFFFFF) + b"/abc"),
        "redirect_relative": sel(STAT) + frame(1, U32.pack(0) + U32.pack(3) + b"abc"),
        "redirect_nul_inside": sel(STAT) + frame(1, U32.pack(0) + U32.pack(5) + b"/a\0bc"),
        "redirect_empty": sel(LISTDIR) + frame(1, U32.pack(0) + U32.pack(0)),
        "redirect_which_7": sel(STAT) + frame(1, U32.pack(7) + U32.pack(2) + b"/a"),
        "redirect_header_cut": sel(STAT) + frame(1, U32.pack(0), length=4),
        "redirect_too_long": sel(STAT) + frame(1, U32.pack(0) + U32.pack(5000) + b"/" * 5000),
        # xattr: length past the tail, shorter than the tail, unterminated / empty names, 4 GiB
        "getxattr_len_past_tail": sel(GETXATTR) + frame(0, U32.pack(100) + b"abc"),
        "getxattr_len_4g": sel(GETXATTR) + frame(0, U32.pack(0xFFFFFFFF) + b"abc"),
        "listxattr_unterminated": sel(LISTXATTR) + frame(0, U32.pack(6) + b"user.a"),
        "listxattr_empty_name": sel(LISTXATTR) + frame(0, U32.pack(8) + b"user.a\0\0"),
        "listxattr_len_short": sel(LISTXATTR) + frame(0, U32.pack(2) + b"user.a\0"),
        # counts and offsets: READ data_len past what was asked / received, WRITE count past sent
        "read_data_len_lies": sel(READ, 1) + frame(0, U32.pack(1 << 20) + b"abc"),
        "read_more_than_asked": sel(READ, 0) + codec.pack_reply("READ", 1, data=b"x" * 500),
        "write_count_past_chunk": sel(WRITE, 0) + codec.pack_reply("WRITE", 1, count=1 << 40),
        "lseek_negative": sel(LSEEK) + codec.pack_reply("LSEEK", 1, offset=-5),
        "getlk_bad_type": sel(GETLK) + codec.pack_reply("GETLK", 1, type=9, start=0, len=1, pid=1),
        "getlk_negative_start": sel(GETLK) + codec.pack_reply("GETLK", 1, type=1, start=-1, len=1, pid=1),
        # a good reply after a bad one on the same stream: the bad one drained exactly
        "bad_then_good": sel(LISTDIR) + frame(0, U32.pack(3) + one) + sel(STAT) + codec.pack_reply("STAT", 1, attr=attr()),
    }


def main() -> None:
    what, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    items = seeds() if what == "seeds" else hostile()
    for name, data in items.items():
        (out / name).write_bytes(data)
    print(f"{len(items)} {what} inputs in {os.fspath(out)}")


if __name__ == "__main__":
    main()
