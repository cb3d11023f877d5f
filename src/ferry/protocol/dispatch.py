"""One rule for finding the handler of an op, used by the node and the agent alike.

Op ``NAME`` in `spec.OPS` is served by the attribute ``<prefix><name in lower case>`` of
whoever serves it: the node's module `node/handlers.py` (``handle_stat`` for STAT), the
agent (``op_cache_open`` for the request CACHE_OPEN, ``told_mkdir`` for the one-way frame
MKDIR).  A side that must serve an op and has no handler for it, or has a handler for an op
it does not serve, fails when it is built (import, construction), not on the first request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import spec


class HandlerError(LookupError):
    """Handlers and the spec's ops disagree (see `handlers_for`)."""


def handler_name(prefix: str, op: str) -> str:
    return prefix + op.lower()


def handlers_for(owner: Any, prefix: str, ops: Iterable[str]) -> dict[int, Callable[..., Any]]:
    """{opcode: handler} for each op in `ops`: ``owner.<prefix><op>`` (`owner` a module, a
    class or an object).  Raises `HandlerError` naming every op of `ops` without a handler,
    and every ``<prefix>…`` attribute of `owner` that serves none of them."""
    ops = list(ops)
    unknown = [op for op in ops if op not in spec.OPCODES]
    if unknown:
        raise HandlerError(f"not ops of spec.OPS: {', '.join(unknown)}")
    found = {spec.OPCODES[op]: getattr(owner, handler_name(prefix, op), None) for op in ops}
    missing = [spec.NAMES[code] for code, h in found.items() if not callable(h)]
    served = {handler_name(prefix, op) for op in ops}
    stray = sorted(n for n in dir(owner) if n.startswith(prefix) and n not in served)
    who = getattr(owner, "__name__", None) or type(owner).__qualname__
    problems = [f"no handler {handler_name(prefix, op)} for op {op}" for op in missing]
    problems += [f"{n} is no op this side serves" for n in stray]
    if problems:
        raise HandlerError(f"{who}: " + "; ".join(problems))
    return found
