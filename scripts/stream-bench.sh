#!/bin/sh
# Cold sequential read and write-back of one large file in cache mode over loopback, with
# export, replica and source all on /dev/shm (issue 14's "1.2 GB/s streams" target).
# Each repeat: a fresh host agent (its own socket and replica dir), the node's page cache
# warm (tmpfs), one `ferry run` timed whole (start-up, the dd, and for the write the
# write-back to the node before the run returns), the agent started by an untimed run first
# (a fresh agent's start is timed apart: it is the host-agent issue's, not the data path's).  Prints MB/s per run and the medians.
#   scripts/stream-bench.sh [MiB=512] [repeats=3]        PROFILE=1: leave node/agent pids in $W
set -eu
MIB=${1:-512}; N=${2:-3}
. "$(dirname "$0")/stream-env.sh"
stream_sandbox sb "big"
now() { date +%s%N; }
fresh() { python3 -m ferry agent stop >/dev/null 2>&1 || true; rm -rf $W/replica $W/cache; }
run() { python3 -m ferry run --mode cache --mount /mnt/r=$URL -- "$@"; }
fresh; run true  # build the shim, warm the interpreter's pages
reads=""; writes=""; ddr=""; ddw=""; starts=""; warm=""
ddrate() { awk '/copied/ {print int($(NF-1) * ($NF == "GB/s" ? 1000 : 1))}' $W/dd.err; }
for i in $(seq $N); do
  fresh
  t0=$(now); run true; t1=$(now); starts="$starts $(( (t1 - t0) / 1000000 ))"
  fresh; run true  # the agent up, the replica empty: the file is cold
  t0=$(now); run true; t1=$(now); warm="$warm $(( (t1 - t0) / 1000000 ))"
  t0=$(now); run dd if=/mnt/r/big of=/dev/null bs=1M 2>$W/dd.err; t1=$(now)
  reads="$reads $(( (MIB << 20) * 1000 / (t1 - t0) ))"; ddr="$ddr $(ddrate)"
  fresh; rm -f $W/export/out; run true
  t0=$(now); run dd if=$W/src of=/mnt/r/out bs=1M 2>$W/dd.err; t1=$(now); ddw="$ddw $(ddrate)"
  cmp -s $W/src $W/export/out || { echo "write-back: the node's file differs" >&2; exit 1; }
  writes="$writes $(( (MIB << 20) * 1000 / (t1 - t0) ))"
done
med() { echo $* | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "fresh-agent \`ferry run true\` ms:$starts  median $(med $starts)"
echo "\`ferry run true\`, agent up, ms:$warm  median $(med $warm)"
echo "cold read, dd alone MB/s:$ddr  median $(med $ddr)"
echo "write, dd alone (in-run) MB/s:$ddw  median $(med $ddw)"
echo "cold read, whole run MB/s:$reads  median $(med $reads)"
echo "write-back, whole run MB/s:$writes  median $(med $writes)"
