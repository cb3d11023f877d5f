"""python -m bench [--quick] [--only NAME[,NAME]] [--peers all|none|NAME,..] [--repeats N] [--out DIR] ..."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import peers, report
from .harness import REPO, Bench, Config, Failure, log, make_row
from .workloads import ALL, BY_NAME

# The peers a --quick run starts unless --peers says otherwise: the ones whose set-up costs
# seconds, not the minutes that writing the test data through s3fs takes.
QUICK_PEERS = ("sshfs", "nfs", "juicefs", "proxychains", "lsyncd")


def git_desc(at: str | None = None) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", at or "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "shim"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.split("\n")
        dirty = [d[3:] for d in dirty if d.strip()] if at is None else []
        return f"git {rev}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean src/, shim/)")
    except Exception as e:  # noqa: BLE001 - informational only
        return f"git: unknown ({e})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="ferry benchmarks (see bench/__init__.py)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes, same code paths (< 2 min)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these workloads (repeatable or comma-separated): {', '.join(BY_NAME)}")
    ap.add_argument("--repeats", type=int, help="repeats per variant (default 5; --quick 3)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                    help="where REPORT.md, results.json and the plots go (default bench/results)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data, node roots, logs)")
    ap.add_argument("--live", action="store_true",
                    help="run the checkout's src/ and shim/ directly instead of a snapshot taken at start")
    ap.add_argument("--rev", metavar="GITREV",
                    help="bench src/ and shim/ as committed at this git revision (e.g. HEAD) instead of the work tree")
    ap.add_argument("--tmp", help="base dir for temp data (default: $TMPDIR or /tmp)")
    ap.add_argument("--peers", metavar="NAME[,NAME]",
                    help=f"peers to run: all (default; --quick: {','.join(QUICK_PEERS)}), none, or some of "
                         f"{', '.join(peers.BY_NAME)}")
    ap.add_argument("--no-install", action="store_true",
                    help="skip (with the reason in the report) peers whose programs are missing, instead of "
                         "installing them with apt-get / pip")
    a = ap.parse_args(argv)
    only = [n.strip() for o in a.only for n in o.split(",") if n.strip()]
    bad = [n for n in only if n not in BY_NAME]
    if bad:
        ap.error(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(BY_NAME)}")
    if a.peers is None and a.quick:
        want = list(QUICK_PEERS)
    elif a.peers in (None, "all"):
        want = None
    elif a.peers == "none":
        want = []
    else:
        want = [n.strip() for n in a.peers.split(",") if n.strip()]
        badp = [n for n in want if n not in peers.BY_NAME]
        if badp:
            ap.error(f"unknown peer(s) {', '.join(badp)}; choose from {', '.join(peers.BY_NAME)}")
    if a.repeats is not None and a.repeats < 1:
        ap.error("--repeats must be ≥ 1")
    cfg = Config(quick=a.quick, repeats=a.repeats or (3 if a.quick else 5), keep=a.keep, live=a.live,
                 tmp_base=a.tmp, peers=want, install=not a.no_install, rev=a.rev)
    mods = [m for m in ALL if not only or m.NAME in only]
    a.out.mkdir(parents=True, exist_ok=True)

    # SIGTERM/SIGHUP -> KeyboardInterrupt, so the finally below stops the nodes.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    t0 = time.monotonic()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log(f"bench: {'quick' if a.quick else 'full'} run, {cfg.repeats} repeats, workloads: "
        f"{', '.join(m.NAME for m in mods)}")
    bench = Bench(cfg)
    rows: list[dict] = []
    data: dict = {}
    took: dict[str, float] = {}
    interrupted = False
    try:
        log(f"bench: temp dir {bench.tmp}; shim {bench.shim}")
        for m in mods:
            t = time.monotonic()
            log(f"bench: {m.NAME} …")
            try:
                got = m.run(bench)
            except Failure as e:
                got = [make_row(m.NAME, "(set-up)", "-", "s", [], error=e, check=lambda r: False)]
            except Exception as e:  # noqa: BLE001 - a bench bug must not lose the other results
                got = [make_row(m.NAME, "(bench error)", "-", "s", [],
                                error=Failure(f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"),
                                check=lambda r: False)]
            rows += got
            for r in got:
                if not r.get("detail"):
                    log(f"  {r['case'].strip()[:60]:60s} {r['variant']:13s} "
                        f"{report.fmt(r['median'], r['unit']):>8s} {r['unit']:5s} "
                        f"{report.fmt_ratio(r):>22s} {r['status']}" + (f" {r['error'][:200]}" if r["error"] else ""))
            if m.NAME == "w2":
                info = next((r.get("data") for r in got if r.get("data")), None)
                if info:
                    data["W2 tarball"] = (f"{info['tar_bytes'] / 1e6:.1f} MB, {info['files']} files "
                                          f"({info['bytes'] / 1e6:.1f} MB; sizes {info['size_min']}…"
                                          f"{info['size_max']} B, median {info['size_median']} B), {info['dirs']} dirs")
            took[m.NAME] = time.monotonic() - t
            log(f"bench: {m.NAME} done in {took[m.NAME]:.0f}s")
    except KeyboardInterrupt:
        interrupted = True
        log("bench: interrupted — writing what was measured")
    finally:
        peer_info = {n: p.desc for n, p in bench.peers.items()}
        bench.close()
    meta = {
        "started": started, "duration_s": time.monotonic() - t0,
        "mode": ("quick" if a.quick else "full") + (" (INTERRUPTED)" if interrupted else ""),
        "repeats": cfg.repeats, "only": only, "git": git_desc(cfg.rev),
        "code": ("checkout run live" if cfg.live else f"src/ and shim/ as committed at {cfg.rev}" if cfg.rev
                 else "snapshot of src/ and shim/ taken at start"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
                   f"Python {platform.python_version()}",
        "load_start": load_start, "load_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "command": " ".join(["python -m bench", shlex.join(argv if argv is not None else sys.argv[1:])]).strip(),
        "warnings": bench.warnings, "data": data, "peers": peer_info, "peer_skips": dict(bench.peer_skips),
        "took": took,
    }
    report.peer_ratios(rows)
    names, note = report.plots(rows, a.out)
    meta["plots"], meta["plot_note"] = names, note
    report.write_json(meta, rows, a.out / "results.json")
    report.write_markdown(meta, rows, names, a.out / "REPORT.md", mods)
    log(f"bench: wrote {a.out / 'REPORT.md'}, results.json{', ' + ', '.join(names) if names else ''} "
        f"in {meta['duration_s']:.0f}s")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
