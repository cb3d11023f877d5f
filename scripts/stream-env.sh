# Sourced by stream-bench.sh and stream-profile.sh: a sandbox on /dev/shm ($W: own runtime,
# cache and replica dirs, so a fresh host agent), $MIB MiB of random bytes in $W/src, a node
# exporting $W/export started (its pid $NODE, its URL $URL), both stopped and $W removed at
# exit.  Call `stream_sandbox TAG COPIES` (COPIES: names in the export that get the bytes).
stream_sandbox() {
    SRC=$(cd "$(dirname "$0")/../src" && pwd)
    W=$(mktemp -d /dev/shm/ferry-$1.XXXXXX)
    export PYTHONPATH=$SRC XDG_RUNTIME_DIR=$W/rt XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data \
           FERRY_CACHE_DIR=$W/replica FERRY_AGENT_SOCK=$W/rt/agent.sock
    mkdir -p -m 700 $W/rt; mkdir -p $W/export
    head -c $((MIB << 20)) /dev/urandom > $W/src
    for name in $2; do cp $W/src $W/export/$name; done
    python3 -m ferry serve --root $W/export --listen 127.0.0.1:0 > $W/node.url &
    NODE=$!
    trap 'kill $NODE 2>/dev/null; python3 -m ferry agent stop >/dev/null 2>&1 || true; rm -rf $W' EXIT
    while [ ! -s $W/node.url ]; do sleep 0.05; done
    URL=$(cat $W/node.url)
}
