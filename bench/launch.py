"""`ferry run -- true` with the host agent running: the C front (launcher/ferry.c, the
installed `ferry`) against `python -m ferry run -- true`, interleaved, medians.

    PYTHONPATH=src python -m bench.launch [--runs N] [--out bench/results/launch.md]

The agent is one of the bench's own (a runtime dir of its own), started before and
stopped after; the first run of each variant is a warm-up and not counted.  Each run is
posix_spawn + waitpid from this process, so the figures include only what the command
costs (`true` alone is the floor of that).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferry import shimlib

HERE = Path(__file__).resolve().parent


def spawn_wait(argv: list[str], env: dict[str, str], output: str | None = None) -> tuple[float, int]:
    """(seconds from posix_spawn to waitpid's return, exit code) of one run of `argv`;
    its stdout and stderr appended to `output` when given.  Also the bench's `startup`
    workload times the C front with this."""
    actions = [] if output is None else [
        (os.POSIX_SPAWN_OPEN, 1, output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2)]
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    return time.perf_counter() - t, os.waitstatus_to_exitcode(status)


def once(argv: list[str], env: dict[str, str]) -> float:
    elapsed, code = spawn_wait(argv, env)
    if code != 0:
        raise SystemExit(f"{argv} exited {code}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "launch.md")
    args = ap.parse_args(argv)

    runtime = Path(tempfile.mkdtemp(prefix="ferry-bench-rt-"))
    os.chmod(runtime, 0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "FERRY_SHIM": str(shimlib.path())}
    env.setdefault("PYTHONPATH", str(HERE.parent / "src"))
    py = [sys.executable, "-m", "ferry"]
    subprocess.run([*py, "agent", "start"], env=env, check=True, capture_output=True)
    variants = {
        "C front: ferry run -- true": [str(shimlib.launcher_path()), "run", "--", "/bin/true"],
        "Python: python -m ferry run -- true": [*py, "run", "--", "/bin/true"],
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
        "true alone (spawn floor)": ["/bin/true"],
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for name, cmd in variants.items():
            once(cmd, env)  # warm-up
        for _ in range(args.runs):
            for name, cmd in variants.items():
                times[name].append(once(cmd, env))
    finally:
        subprocess.run([*py, "agent", "stop"], env=env, capture_output=True)

    lines = ["# Launch: `ferry run -- true` with the host agent running", "",
             f"{args.runs} runs of each, interleaved, after one warm-up; posix_spawn + waitpid from the bench "
             f"process. {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.", "",
             "| variant | median ms | p10 ms | p90 ms |", "|---|---:|---:|---:|"]
    for name, ts in times.items():
        ms = sorted(t * 1e3 for t in ts)
        q = statistics.quantiles(ms, n=10)
        lines.append(f"| {name} | {statistics.median(ms):.2f} | {q[0]:.2f} | {q[-1]:.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
