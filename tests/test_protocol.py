"""The codec round-trips every op's fields, and the frame decoder fails only with
ProtocolError on any input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.protocol import codec, gen, spec
from ferry.protocol.codec import Attr, Entry, FrameDecoder, ProtocolError
from ferry.protocol.dispatch import HandlerError, handlers_for

_INTS = {
    "u32": st.integers(0, 2**32 - 1),
    "i32": st.integers(-(2**31), 2**31 - 1),
    "u64": st.integers(0, 2**64 - 1),
    "i64": st.integers(-(2**63), 2**63 - 1),
}
_ATTRS = st.builds(Attr, *(_INTS[kind] for _, kind in spec.ATTR))
_KINDS = {
    **_INTS,
    "str": st.binary(max_size=64),
    "bytes": st.binary(max_size=256),
    "attr": _ATTRS,
    "entries": st.lists(st.builds(Entry, st.binary(max_size=16), st.binary(max_size=16), _ATTRS), max_size=5),
}


def _fields(fields: list[tuple[str, str]]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({name: _KINDS[kind] for name, kind in fields})


REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "shim"


@pytest.mark.parametrize("name", list(gen.FILES))
def test_generated_c_matches_spec(name: str) -> None:
    assert (REPO / name).read_text() == gen.FILES[name](), f"run `python -m ferry.protocol.gen` and commit {name}"


def test_shim_sends_every_op_it_has_an_encoder_for() -> None:
    """spec.SHIM_OPS names exactly the ops the shim sends: no encoder is generated for nothing."""
    sources = "".join(p.read_text() for p in SHIM.glob("*.c"))
    unused = [op for op in spec.SHIM_OPS if f"fy_enc_{op.lower()}(" not in sources]
    assert not unused, f"the shim never sends {unused}: drop them from spec.SHIM_CALLS/SHIM_TELLS"


def test_the_c_front_sends_and_reads_every_op_it_has_code_for() -> None:
    """gen.FRONT_OPS names exactly the control ops launcher/ferry.c speaks."""
    source = (REPO / "launcher" / "ferry.c").read_text()
    unused = [op for op in gen.FRONT_OPS
              if f"fy_enc_{op.lower()}(" not in source or f"fy_dec_{op.lower()}(" not in source]
    assert not unused, f"launcher/ferry.c never sends or reads {unused}: drop them from gen.FRONT_OPS"


def test_each_side_has_a_handler_for_every_op_it_serves() -> None:
    """The one rule (dispatch.handlers_for), for the node's module and the agent's class."""
    from ferry.agent.server import Agent
    from ferry.node import handlers

    node = handlers_for(handlers, "handle_", spec.NODE_OPS)
    assert node[spec.OPCODES["OPEN"]] is handlers.handle_open
    assert {handlers.OPS[c].handler for c in node} == set(node.values())
    assert handlers.OPS[spec.OPCODES["LSEEK"]].handler is handlers._agent_only
    calls = handlers_for(Agent, "op_", spec.SHIM_CALLS)
    tells = handlers_for(Agent, "told_", spec.SHIM_TELLS)
    assert calls[spec.OPCODES["CACHE_OPEN"]] is Agent.op_cache_open
    assert tells[spec.OPCODES["CACHE_CLOSE"]] is Agent.told_cache_close
    assert set(spec.SHIM_OPS) == set(spec.SHIM_CALLS) | set(spec.SHIM_TELLS)


def test_a_missing_or_stray_handler_fails_naming_it() -> None:
    class Side:
        def op_stat(self, f):
            return {}

        def op_statt(self, f):  # a typo: serves nothing
            return {}

    with pytest.raises(HandlerError, match=r"no handler op_listdir for op LISTDIR.*op_statt is no op"):
        handlers_for(Side(), "op_", ["STAT", "LISTDIR"])
    with pytest.raises(HandlerError, match="NOT_AN_OP"):
        handlers_for(Side(), "op_", ["STAT", "NOT_AN_OP"])
    del Side.op_statt
    side = Side()
    assert handlers_for(side, "op_", ["STAT"]) == {spec.OPCODES["STAT"]: side.op_stat}


@pytest.mark.parametrize("op", list(spec.OPS))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), rid=_INTS["u64"], flags=st.integers(0, 2**16 - 1))
def test_request_round_trip(op: str, data: st.DataObject, rid: int, flags: int) -> None:
    code, req, _, _ = spec.OPS[op]
    values = data.draw(_fields(req))
    frames = FrameDecoder("request").feed(codec.pack_request(op, rid, flags, **values))
    assert [(f.opcode, f.flags, f.rid) for f in frames] == [(code, flags, rid)]
    assert codec.unpack_fields(codec.request_fields(code), frames[0].payload) == values


@pytest.mark.parametrize("op", list(spec.OPS))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), rid=_INTS["u64"])
def test_reply_round_trip(op: str, data: st.DataObject, rid: int) -> None:
    code, _, rep, _ = spec.OPS[op]
    values = data.draw(_fields(rep))
    frames = FrameDecoder("reply").feed(codec.pack_reply(op, rid, 0, **values))
    assert [(f.status, f.rid) for f in frames] == [(0, rid)]
    assert codec.unpack_fields(codec.reply_fields(code), frames[0].payload) == values


@given(rid=_INTS["u64"], err=st.integers(1, 4095))
def test_error_reply_has_no_payload(rid: int, err: int) -> None:
    assert FrameDecoder("reply").feed(codec.pack_error(rid, err)) == [codec.Reply(-err, rid, b"")]


@settings(deadline=None)
@given(ops=st.lists(st.sampled_from(["STAT", "MKDIR", "SYNC", "CLOSE"]), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 400), max_size=10))
def test_decoder_reassembles_split_frames(ops: list[str], cuts: list[int]) -> None:
    stream = b"".join(codec.pack_request(op, i, 0, path=b"/p", flags=0, mode=0o755, handle=7)
                      for i, op in enumerate(ops))
    dec = FrameDecoder("request")
    frames = []
    pos = 0
    for cut in sorted(cuts) + [len(stream)]:
        frames += dec.feed(stream[pos:max(pos, cut)])
        pos = max(pos, cut)
    assert [f.rid for f in frames] == list(range(len(ops)))
    assert dec.pending == 0


def test_field_called_flags_does_not_clash_with_header_flags() -> None:
    frame = codec.pack_request("STAT", 9, spec.FLAG_ONEWAY, path=b"/x", flags=spec.STAT_NOFOLLOW)
    (req,) = FrameDecoder("request").feed(frame)
    assert req.flags == spec.FLAG_ONEWAY
    assert codec.unpack_fields(codec.request_fields(req.opcode), req.payload)["flags"] == spec.STAT_NOFOLLOW


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from(["request", "reply"]), chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_decoder_survives_random_bytes(kind: str, chunks: list[bytes]) -> None:
    dec = FrameDecoder(kind)
    try:
        for chunk in chunks:
            for frame in dec.feed(chunk):
                if kind == "request":
                    codec.unpack_fields(codec.request_fields(frame.opcode), frame.payload)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(op=st.sampled_from(list(spec.OPS)), payload=st.binary(max_size=200), reply=st.booleans())
def test_unpack_survives_random_payloads(op: str, payload: bytes, reply: bool) -> None:
    try:
        codec.unpack_fields(spec.OPS[op][2 if reply else 1], payload)
    except ProtocolError:
        pass


def test_decoder_rejects_oversized_and_unknown_frames() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameDecoder("request").feed(codec.REQ_HEADER.pack(spec.MAX_FRAME + 1, 2, 0, 1))
    with pytest.raises(ProtocolError, match="unknown opcode"):
        FrameDecoder("request").feed(codec.REQ_HEADER.pack(0, 999, 0, 1))


def _read_all(reader: codec.FrameReader, stream: bytes, cuts: list[int]) -> list:
    """Push `stream` through a FrameReader the way a BufferedProtocol would, in pieces."""
    frames, pos = [], 0
    for cut in cuts + [len(stream)]:
        while pos < min(cut, len(stream)):
            buf = reader.get_buffer(-1)
            n = min(len(buf), min(cut, len(stream)) - pos)
            buf[:n] = stream[pos:pos + n]
            pos += n
            frames += reader.buffer_updated(n)
    return frames


@settings(max_examples=60)
@given(sizes=st.lists(st.sampled_from([0, 5, 70_000, 300_000, 1 << 20]), min_size=1, max_size=5),
       cuts=st.lists(st.integers(0, 3 << 20), max_size=6))
def test_frame_reader_matches_decoder(sizes: list[int], cuts: list[int]) -> None:
    """Small frames, frames bigger than the scratch buffer and 1 MiB data frames, split
    anywhere, come out of FrameReader exactly as FrameDecoder sees them."""
    stream = b"".join(codec.pack_request("WRITE", i, 0, handle=i, offset=i, data=bytes([i % 251]) * n)
                      for i, n in enumerate(sizes))
    got = _read_all(codec.FrameReader("request"), stream, sorted(cuts))
    want = FrameDecoder("request").feed(stream)
    assert [(f.opcode, f.rid, bytes(f.payload)) for f in got] == [(f.opcode, f.rid, bytes(f.payload)) for f in want]


def test_frame_reader_rejects_oversized_frames() -> None:
    reader = codec.FrameReader("reply")
    buf = reader.get_buffer(-1)
    buf[:16] = codec.REP_HEADER.pack(spec.MAX_FRAME + 1, 0, 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.buffer_updated(16)


@given(kind=st.sampled_from(["request", "reply"]), stream=st.binary(max_size=300),
       cuts=st.lists(st.integers(0, 300), max_size=6))
def test_frame_reader_survives_random_bytes(kind: str, stream: bytes, cuts: list[int]) -> None:
    """Garbage from a peer ends in ProtocolError, never another exception."""
    try:
        _read_all(codec.FrameReader(kind), stream, sorted(cuts))
    except ProtocolError:
        pass
