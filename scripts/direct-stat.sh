#!/bin/sh
# Direct-mode stat latency, as bench/workloads/statlat.py measures it, with a node and a
# host agent of its own on /dev/shm: N distinct files stat'ed PASSES times per run, RUNS
# runs; prints each run's p50/p99 (µs, both passes pooled) and their medians.
#   scripts/direct-stat.sh [N] [PASSES] [RUNS]
#   FERRY_SRC=DIR: the ferry sources to run (default: this checkout's src).
#   EXTRA_MOUNT=PREFIX: a second mount of the same node (as the bench's cold runs have).
#   KEEP=1: leave node and agent running and print their pids (for py-spy/strace), then wait for Enter.
set -eu
N=${1:-2000}; PASSES=${2:-2}; RUNS=${3:-3}
SRC=${FERRY_SRC:-$(cd "$(dirname "$0")/../src" && pwd)}
W=$(mktemp -d /dev/shm/ferry-ds.XXXXXX)
export PYTHONPATH=$SRC XDG_RUNTIME_DIR=$W/rt XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache} XDG_DATA_HOME=$W/data \
       FERRY_CACHE_DIR=$W/replica FERRY_AGENT_SOCK=$W/rt/agent.sock
mkdir -p -m 700 $W/rt; mkdir -p $W/export/stat
python3 - "$W/export/stat" "$N" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
for i in range(int(sys.argv[2])):
    (d / f"f{i:05d}").write_bytes(b"x" * (i % 100))
PY
gcc -O2 -o $W/statlat "$(dirname "$0")/../bench/c/statlat.c"
python3 -m ferry serve --root $W/export --listen 127.0.0.1:0 > $W/node.url 2>$W/node.log &
NODE=$!
trap 'kill $NODE 2>/dev/null || true; python3 -m ferry agent stop >/dev/null 2>&1 || true; rm -rf $W' EXIT
while [ ! -s $W/node.url ]; do sleep 0.05; done
URL=$(cat $W/node.url)
run() { python3 -m ferry run --mode direct --mount /mnt/r=$URL ${EXTRA_MOUNT:+--mount $EXTRA_MOUNT=$URL} -- "$@"; }
run $W/statlat /mnt/r/stat 10 1 $W/warm.txt
if [ -n "${KEEP:-}" ]; then
  AGENT=$(for p in $(pgrep -u $(id -u) -f "ferry agent"); do
    grep -qz "FERRY_AGENT_SOCK=$W/rt/agent.sock" /proc/$p/environ 2>/dev/null && echo $p; done | head -1)
  echo "node $NODE agent $AGENT url $URL W $W"
  echo "$NODE $AGENT $URL $W" > /dev/shm/ferry-ds.pids
  sh -c "${KEEP_CMD:-read _}" || true
  exit 0
fi
for r in $(seq $RUNS); do
  run $W/statlat /mnt/r/stat $N $PASSES $W/out$r.txt
done
python3 - $W $RUNS <<'PY'
import sys, statistics
w, runs = sys.argv[1], int(sys.argv[2])
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]
p50s, p99s = [], []
for r in range(1, runs + 1):
    us = [int(l.split()[1]) / 1000 for l in open(f"{w}/out{r}.txt") if l.strip()]
    p50s.append(pct(us, 50)); p99s.append(pct(us, 99))
    print(f"run {r}: p50 {p50s[-1]:.1f} µs  p99 {p99s[-1]:.1f} µs  mean {statistics.mean(us):.1f}")
print(f"median of {runs}: p50 {statistics.median(p50s):.1f} µs  p99 {statistics.median(p99s):.1f} µs")
PY
