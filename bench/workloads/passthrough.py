"""Passthrough: a syscall-heavy program touching only local paths, with and without ferry.

ITERS rounds of stat+open+read+close over 64 local 4 KiB files.  Wall time of the whole
invocation (`ferry run -- prog` vs `prog`, nothing subtracted) and in-run (the program's own
clock around its loop).  The target — unchanged within 1 % — is a sub-percent figure, so it
is checked on instruction counts, not wall time: `perf stat -x, -e instructions` (user +
kernel) of the program itself (`ferry run -- perf stat … -- prog` vs `perf stat … -- prog`),
per repeat, interleaved; target ≤ 1.01× local.  Where the machine has no usable perf events
(e.g. a VM without a PMU: perf prints `<not supported>`) that row says so and has no result.
Also, deterministic and always available: the user-space instructions per loop iteration
and of the start-up (shim init), counted by valgrind's cachegrind at 0 and ITERS_VG
iterations (the kernel's share of each call is not counted there, so that ratio is far above
the whole-program one: a cost per call, not the target).
"""

from __future__ import annotations

import re
import shutil

from ..harness import VARIANTS, Failure, interleave, make_row, ratio_le, run_cmd

NAME = "passthrough"
TITLE = "Passthrough: local-only syscalls under `ferry run`"
NFILES = 64
LIMIT = 1.01
ITERS_VG = 20_000


def perf_usable() -> tuple[str | None, str]:
    """(perf's path, "") when `perf stat -e instructions` counts here, else (None, why not)."""
    perf = shutil.which("perf")
    if not perf:
        return None, "perf is not installed (Debian `linux-perf`; scripts/install-bench-deps.sh installs it)"
    r = run_cmd([perf, "stat", "-x,", "-e", "instructions", "true"], timeout=30)
    line = next((ln for ln in r.stderr.splitlines() if "instructions" in ln), "")
    if r.rc != 0 or not line or line.split(",")[0] in ("<not supported>", "<not counted>", ""):
        return None, (f"perf events unavailable here (`perf stat -e instructions true`: "
                      f"{line or r.stderr.strip()[:120] or 'exit ' + str(r.rc)}; no PMU in this VM?)")
    return perf, ""


def run(b) -> list[dict]:
    iters = 50_000 if b.cfg.quick else 200_000
    prog = b.compile("passthru")
    d = b.dir("passthru-files", fresh=True)
    for i in range(NFILES):
        (d / f"p{i:04d}").write_bytes(bytes([i]) * 4096)
    cmd = [prog, str(d), str(NFILES), str(iters)]
    failures: dict[str, Failure] = {}
    pfail: dict[str, Failure] = {}
    perf, why = perf_usable()
    vg = shutil.which("valgrind")
    vg_res: dict[str, dict] = {}
    pstat = b.dir("passthru-perf")
    with b.node(NAME) as node:
        b.run_variant("ferry-direct", cmd, node, timeout=120)  # warm-up

        def one(v: str, i: int) -> dict:
            r = b.run_variant(v, cmd, node, timeout=300)
            ns, nbytes = (int(x) for x in r.stdout.split())
            if nbytes != iters * 4096:
                raise Failure(f"read {nbytes} bytes, expected {iters * 4096}", b.repro(cmd))
            return {"wall": r.wall, "loop": ns / 1e9}
        res = interleave(b.cfg.repeats, list(VARIANTS), one, failures)

        def counted(v: str, i: int) -> float:
            out = pstat / f"{v}-{i}.csv"
            pc = [perf, "stat", "-x,", "-o", str(out), "-e", "instructions", "--", *cmd]
            b.run_variant(v, pc, node, timeout=300, stderr_ok=True)
            line = next((ln for ln in out.read_text().splitlines() if "instructions" in ln), "")
            try:
                return float(line.split(",")[0])
            except ValueError:
                raise Failure(f"perf stat printed no count: {line or out.read_text()[:200]}", b.repro(pc)) from None
        ins = interleave(b.cfg.repeats, list(VARIANTS), counted, pfail) if perf else {}

        if vg:
            for v in VARIANTS:
                try:
                    got = []
                    for k in (0, ITERS_VG):
                        vc = [vg, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                              prog, str(d), str(NFILES), str(k)]
                        r = b.run_variant(v, vc, node, timeout=600, stderr_ok=True)
                        m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
                        if not m:
                            raise Failure(f"cachegrind printed no I refs: {r.stderr[-300:]}", b.repro(vc))
                        got.append(int(m.group(1).replace(",", "")))
                    vg_res[v] = {"start": float(got[0]), "per_iter": (got[1] - got[0]) / ITERS_VG}
                except Failure as e:
                    vg_res[v] = {"error": e}
    case = f"{iters // 1000}k × stat+open+read+close"
    rows = []
    for key, fig in (("wall", "whole invocation"), ("loop", "in-run (the program's loop)")):
        for v in VARIANTS:
            loc = [s[key] for s in res["local"]] if v != "local" else None
            rows.append(make_row(NAME, f"{case}, {fig}", v, "s", [s[key] for s in res[v]], local=loc,
                                 error=failures.get(v), extra={"fig": "whole" if key == "wall" else "in-run"}))
    for v in VARIANTS:
        has_target = v != "local"
        common = dict(target=f"≤ {LIMIT}× local" if has_target else "", extra={"fig": "in-run"})
        if perf:
            rows.append(make_row(NAME, f"{case}: instructions of the program (perf stat, user + kernel)", v,
                                 "instr", ins[v], local=ins["local"] if v != "local" else None,
                                 error=pfail.get(v), check=ratio_le(LIMIT) if has_target else None,
                                 group="instructions", **common))
        else:
            rows.append(make_row(NAME, f"{case}: instructions of the program (perf stat, user + kernel)", v,
                                 "instr", [], group="instructions",
                                 note=f"not measured: {why}" if v == "local" else "", **common))
    for key, what in (("per_iter", "per loop iteration (4 calls)"), ("start", "start-up and exit (0 iterations)")):
        for v in VARIANTS:
            vr = vg_res.get(v, {})
            samples = [vr[key]] if key in vr else []
            loc = [vg_res["local"][key]] if v != "local" and key in vg_res.get("local", {}) else None
            rows.append(make_row(NAME, f"  user-space instructions {what} (cachegrind)", v, "instr", samples,
                                 local=loc, error=vr.get("error"), detail=True, group=f"vg {key}",
                                 note="" if vg else "valgrind not installed"))
    return rows
