#!/bin/sh
# py-spy flame graphs of the node and the agent over cold 512 MiB reads (3 files, each
# fetched once) and write-backs (3 files) in cache mode, all on /dev/shm.
#   scripts/stream-profile.sh OUTDIR TAG      -> OUTDIR/flame-{node,agent}-{read-cold,write-back}-TAG.svg
set -eu
OUT=$1; TAG=$2; MIB=${MIB:-512}
. "$(dirname "$0")/stream-env.sh"
stream_sandbox sp "big1 big2 big3"
run() { python3 -m ferry run --mode cache --mount /mnt/r=$URL -- "$@"; }
run true
AGENT=$(pgrep -f "ferry.*agent" -n -u $(id -u) --env FERRY_AGENT_SOCK=$W/rt/agent.sock 2>/dev/null || true)
[ -n "$AGENT" ] || AGENT=$(for p in $(pgrep -u $(id -u) -f ferry); do
  grep -qz "FERRY_AGENT_SOCK=$W/rt/agent.sock" /proc/$p/environ 2>/dev/null && \
  grep -qa agent /proc/$p/cmdline && echo $p; done | head -1)
echo "node $NODE agent $AGENT"
prof() {  # prof NAME CMD...
  py-spy record -r 500 -o $OUT/flame-node-$1-$TAG.svg --pid $NODE >/dev/null 2>&1 & P1=$!
  py-spy record -r 500 -o $OUT/flame-agent-$1-$TAG.svg --pid $AGENT >/dev/null 2>&1 & P2=$!
  sleep 1; shift; "$@"; sleep 0.5
  kill -INT $P1 $P2; wait $P1 $P2 || true
}
reads() { for i in 1 2 3; do run dd if=/mnt/r/big$i of=/dev/null bs=1M status=none; done; }
writes() { for i in 1 2 3; do run dd if=$W/src of=/mnt/r/out$i bs=1M status=none; done; }
prof read-cold reads
prof write-back writes
