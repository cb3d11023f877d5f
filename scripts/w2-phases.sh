#!/bin/sh
# W2 in one `ferry run` (untar 1000 files / 16 MB in 50 dirs, `ls -lR`, `rm -r`), with local
# dir, export and replica all on /dev/shm: in-run phase times in ms, N runs (default 5),
# local and ferry interleaved.  Own node and own agent, stopped at the end.
# SHAPE three: each phase a `ferry run` of its own (the untar's write-back is paid at its
# end, `rm -r` removes the tree on the node); times are then whole runs, agent running.
# Usage: scripts/w2-phases.sh [N] [MODE] [SHAPE]   (MODE: cache (default) or direct;
#                                                   SHAPE: one (default) or three)
set -eu
N=${1:-5}; MODE=${2:-cache}; SHAPE=${3:-one}
W=$(mktemp -d /dev/shm/w2p.XXXXXX)
export FERRY_AGENT_SOCK=$W/agent.sock FERRY_CACHE_DIR=$W/cache
NODE=
cleanup() { ferry agent stop >/dev/null 2>&1 || true; [ -z "$NODE" ] || kill $NODE 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p $W/export $W/local $W/src/tree
python3 - "$W/src/tree" <<'PY'
import os, sys, random
r = random.Random(1); root = sys.argv[1]
for d in range(50):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for f in range(20):
        with open(f"{root}/d{d}/f{f}", "wb") as fh:
            fh.write(r.randbytes(16_000))
PY
tar -cf $W/w2.tar -C $W/src tree
cat > $W/phases.sh <<PH
ms() { date +%s%N; }
a=\$(ms); tar -xf $W/w2.tar -C \$1; b=\$(ms); ls -lR \$1/tree >/dev/null; c=\$(ms); rm -r \$1/tree; d=\$(ms)
echo "\$(( (b-a)/1000000 )) \$(( (c-b)/1000000 )) \$(( (d-c)/1000000 )) \$(( (d-a)/1000000 ))"
PH
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ferry serve --root $W/export --listen 127.0.0.1:$PORT 2>$W/serve.log & NODE=$!
sleep 1
ferry agent start >/dev/null 2>&1 || true
echo "variant untar ls rm total (ms)"
R="ferry run --mode $MODE --mount /mnt/r=ferry://127.0.0.1:$PORT --"
ms() { date +%s%N; }
for i in $(seq $N); do
  echo "local $(sh $W/phases.sh $W/local)"
  if [ "$SHAPE" = three ]; then
    a=$(ms); $R tar -xf $W/w2.tar -C /mnt/r; b=$(ms); $R ls -lR /mnt/r/tree >/dev/null; c=$(ms)
    $R rm -r /mnt/r/tree; d=$(ms)
    echo "$MODE-three $(( (b-a)/1000000 )) $(( (c-b)/1000000 )) $(( (d-c)/1000000 )) $(( (d-a)/1000000 ))"
  else
    echo "$MODE $($R sh $W/phases.sh /mnt/r)"
  fi
done
