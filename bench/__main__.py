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
from .harness import REPO, Bench, Config, Failure, fs_type, log, make_row
from .workloads import ALL, BY_NAME

# The peers a --quick run starts unless --peers says otherwise: the ones whose set-up costs
# seconds, not the minutes that writing the test data through s3fs takes.
QUICK_PEERS = ("sshfs", "nfs", "juicefs", "proxychains", "lsyncd")
# The disk view (`--medium both`): the workloads whose figures depend most on the medium
# (creates, streams), with the peers that keep their data on it (JuiceFS: SQLite + objects +
# block cache; sshfs: the exported dir), so the full run stays within ~35 min on 2 cores.
DISK_WORKLOADS = ("w2", "smallfiles", "seqio")
DISK_PEERS = ("sshfs", "juicefs")
MEDIA = {"tmpfs": "/dev/shm", "disk": "/var/tmp"}


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
    ap.add_argument("--medium", choices=("tmpfs", "disk", "both"),
                    help="where the bench temp dir (local dir, node export, ferry's replica, the peers' "
                         "stores) lives: tmpfs (the headline), disk, or both (default; --quick: tmpfs): the "
                         f"whole run on tmpfs, then {', '.join(DISK_WORKLOADS)} again on disk")
    ap.add_argument("--tmpfs-dir", default=MEDIA["tmpfs"], help=f"base dir on tmpfs (default {MEDIA['tmpfs']})")
    ap.add_argument("--disk-dir", default=MEDIA["disk"], help=f"base dir on a disk (default {MEDIA['disk']})")
    ap.add_argument("--disk-workloads", metavar="NAME[,NAME]",
                    help=f"workloads of the disk view with --medium both (default {','.join(DISK_WORKLOADS)})")
    ap.add_argument("--tmp", help="one run with every variant's data in this dir (its medium detected from its "
                                  "file system type); instead of --medium")
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
    mods = [m for m in ALL if not only or m.NAME in only]
    if a.tmp and a.medium:
        ap.error("--tmp DIR and --medium exclude each other (--tmpfs-dir / --disk-dir set the media's dirs)")
    disk_names = ([n.strip() for n in a.disk_workloads.split(",") if n.strip()] if a.disk_workloads
                  else list(DISK_WORKLOADS))
    badd = [n for n in disk_names if n not in BY_NAME]
    if badd:
        ap.error(f"unknown workload(s) in --disk-workloads: {', '.join(badd)}")
    # (medium, base dir, workloads, peers) per view, the headline first.
    if a.tmp:
        kind = fs_type(a.tmp)
        views = [("tmpfs" if kind == "tmpfs" else "disk", a.tmp, mods, want)]
    else:
        medium = a.medium or ("tmpfs" if a.quick else "both")
        views = []
        if medium in ("tmpfs", "both"):
            views.append(("tmpfs", a.tmpfs_dir, mods, want))
        if medium == "disk":
            views.append(("disk", a.disk_dir, mods, want))
        if medium == "both":
            dmods = [m for m in mods if m.NAME in disk_names]
            dpeers = [p for p in DISK_PEERS if want is None or p in want] if a.peers in (None, "all") else want
            if dmods:
                views.append(("disk", a.disk_dir, dmods, dpeers))
    for medium, base, _, _ in views:
        kind = fs_type(base)
        if (kind == "tmpfs") != (medium == "tmpfs"):
            log(f"bench: warning: {base} is {kind}, not {'tmpfs' if medium == 'tmpfs' else 'a disk'}")
    repeats = a.repeats or (3 if a.quick else 5)
    a.out.mkdir(parents=True, exist_ok=True)

    # SIGTERM/SIGHUP -> KeyboardInterrupt, so the finally below stops the nodes.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    t0 = time.monotonic()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    code_at_start = git_desc(a.rev)  # (what the snapshot holds: the tree may move on during the run)
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log(f"bench: {'quick' if a.quick else 'full'} run, {repeats} repeats; "
        + "; ".join(f"{md} ({base}): {', '.join(m.NAME for m in ms)}" for md, base, ms, _ in views))
    rows: list[dict] = []
    data: dict = {}
    took: dict[str, float] = {}
    media: dict[str, dict] = {}
    peer_info: dict[str, str] = {}
    peer_skips: dict[str, str] = {}
    warnings: list[str] = []
    interrupted = False
    cfg = None
    for medium, base, vmods, vpeers in views:
        if interrupted:
            break
        cfg = Config(quick=a.quick, repeats=repeats, keep=a.keep, live=a.live, tmp_base=base, peers=vpeers,
                     install=not a.no_install, rev=a.rev, medium=medium)
        bench = Bench(cfg)
        media[medium] = {"dir": str(bench.tmp), "fs": bench.fstype, "replica": str(bench.replica),
                         "workloads": [m.NAME for m in vmods],
                         "peers": "all" if vpeers is None else ", ".join(vpeers) or "none"}
        try:
            log(f"bench: [{medium}] temp dir {bench.tmp} ({bench.fstype}); replica {bench.replica}; "
                f"shim {bench.shim}")
            for m in vmods:
                t = time.monotonic()
                log(f"bench: [{medium}] {m.NAME} …")
                try:
                    got = m.run(bench)
                except Failure as e:
                    got = [make_row(m.NAME, "(set-up)", "-", "s", [], error=e, check=lambda r: False)]
                except Exception as e:  # noqa: BLE001 - a bench bug must not lose the other results
                    got = [make_row(m.NAME, "(bench error)", "-", "s", [],
                                    error=Failure(f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"),
                                    check=lambda r: False)]
                for r in got:
                    r["medium"] = medium
                    if medium != views[0][0] and r["status"] != "FAIL":
                        # the targets are the headline's; the second view shows the same rows without
                        if r["target"]:
                            r["target"] = ""
                            r["status"] = "info"
                rows += got
                for r in got:
                    if not r.get("detail"):
                        log(f"  {r['case'].strip()[:60]:60s} {r['variant']:13s} "
                            f"{report.fmt(r['median'], r['unit']):>8s} {r['unit']:5s} "
                            f"{report.fmt_ratio(r):>22s} {r['status']}" + (f" {r['error'][:200]}" if r["error"] else ""))
                if m.NAME == "w2" and "W2 tarball" not in data:
                    info = next((r.get("data") for r in got if r.get("data")), None)
                    if info:
                        data["W2 tarball"] = (f"{info['tar_bytes'] / 1e6:.1f} MB, {info['files']} files "
                                              f"({info['bytes'] / 1e6:.1f} MB; sizes {info['size_min']}…"
                                              f"{info['size_max']} B, median {info['size_median']} B), "
                                              f"{info['dirs']} dirs")
                took[f"{medium}/{m.NAME}"] = time.monotonic() - t
                log(f"bench: [{medium}] {m.NAME} done in {took[f'{medium}/{m.NAME}']:.0f}s")
        except KeyboardInterrupt:
            interrupted = True
            log("bench: interrupted — writing what was measured")
        finally:
            for n, p in bench.peers.items():
                peer_info[n] = p.desc if n not in peer_info else peer_info[n]
            for n, why in bench.peer_skips.items():
                peer_skips.setdefault(n, why)
            warnings += [f"[{medium}] {w}" for w in bench.warnings]
            bench.close()
    meta = {
        "started": started, "duration_s": time.monotonic() - t0,
        "mode": ("quick" if a.quick else "full") + (" (INTERRUPTED)" if interrupted else ""),
        "repeats": repeats, "only": only, "git": code_at_start,
        "code": ("checkout run live" if a.live else f"src/ and shim/ as committed at {a.rev}" if a.rev
                 else "snapshot of src/ and shim/ taken at start"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
                   f"Python {platform.python_version()}",
        "load_start": load_start, "load_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "command": " ".join(["python -m bench", shlex.join(argv if argv is not None else sys.argv[1:])]).strip(),
        "warnings": warnings, "data": data, "peers": peer_info, "peer_skips": peer_skips,
        "took": took, "media": media, "headline": views[0][0] if views else None,
    }
    report.peer_ratios(rows)
    names, note = report.plots(rows, a.out, meta["headline"])
    meta["plots"], meta["plot_note"] = names, note
    report.write_json(meta, rows, a.out / "results.json")
    report.write_markdown(meta, rows, names, a.out / "REPORT.md", mods)
    log(f"bench: wrote {a.out / 'REPORT.md'}, results.json{', ' + ', '.join(names) if names else ''} "
        f"in {meta['duration_s']:.0f}s")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
