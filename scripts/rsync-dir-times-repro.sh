#!/bin/bash
# Reproduces the cache-mode directory-times bug of tests/test_real_programs.py::test_rsync_both_ways:
# rsync push, pull and push again in one `ferry run`, N times against fresh nodes; prints what the
# third pass found to change and how many runs failed.  Usage: scripts/rsync-dir-times-repro.sh [N]
set -u
N=${1:-14}
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/ferry-rsync-repro.XXXXXX)
export XDG_RUNTIME_DIR=$T/rt PYTHONPATH=$PWD/src
mkdir -m 700 "$T/rt"
python3 - "$T/src" <<'PY'
import os, sys
from pathlib import Path
root = Path(sys.argv[1])
(root / "a" / "b").mkdir(parents=True); (root / "empty").mkdir()
(root / "a" / "f1").write_text("one\n"); (root / "a" / "b" / "bin").write_bytes(os.urandom(70_000))
(root / "top.txt").write_text("top\n"); os.symlink("f1", root / "a" / "link")
for i, p in enumerate(["a/f1", "a/b/bin", "top.txt", "a/b", "a", "empty"]):
    os.utime(root / p, ns=(1_500_000_000_123_456_789 + i * 10**9,) * 2)
PY
n=0
for i in $(seq 1 "$N"); do
  mkdir "$T/e$i"
  python3 -m ferry serve --root "$T/e$i" --listen 127.0.0.1:0 > "$T/p$i" 2>/dev/null & node=$!
  sleep 0.8; URL=$(head -1 "$T/p$i"); rm -rf "$T/back"
  out=$(python3 -m ferry run --mount /mnt/x="$URL" -- sh -c "rsync -a $T/src/ /mnt/x/r/ && rsync -a /mnt/x/r/ $T/back/ && rsync -ai $T/src/ /mnt/x/r/ && echo done" 2>&1)
  [ "$out" = "done" ] || { n=$((n+1)); echo "$out" | head -3; }
  kill $node; wait $node 2>/dev/null
done
python3 -m ferry agent stop >/dev/null 2>&1
rm -rf "$T"
echo "$n of $N runs failed"
