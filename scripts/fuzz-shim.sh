#!/usr/bin/env bash
# Fuzzes the shim's reply parsing (tests/c/fuzz_reply.c over shim/reply.c) with libFuzzer.
#
#   scripts/fuzz-shim.sh [SECONDS]      # or FUZZ_SECONDS=...; default 60
#
# Installs clang when missing (apt-get, sudo when not root), builds the target with
# -fsanitize=fuzzer,address,undefined and the replay driver with gcc, seeds a corpus with
# valid replies from the Python codec (scripts/fuzz_shim_seeds.py), replays the hostile
# regression set, then fuzzes.  Exits non-zero on any crash (a crash-* file is left in
# $FUZZ_DIR).  Everything goes under build/fuzz-shim (gitignored) unless FUZZ_DIR is set;
# the corpus there is kept between runs.  FUZZ_RUNS=N bounds the run by executions too.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-${FUZZ_SECONDS:-60}}"
out="${FUZZ_DIR:-$here/build/fuzz-shim}"
python="${PYTHON:-python3}"

if ! command -v clang >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
fi
mkdir -p "$out/corpus"
src=("$here/tests/c/fuzz_reply.c" "$here/shim/reply.c")
clang -std=gnu11 -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$here/shim" -o "$out/fuzz_reply" "${src[@]}"
${CC:-gcc} -std=gnu11 -g -O1 -Wall -Wextra -fsanitize=address,undefined -fno-sanitize-recover=all \
  -DFUZZ_STANDALONE -I"$here/shim" -o "$out/fuzz_reply_replay" "${src[@]}"

"$python" "$here/scripts/fuzz_shim_seeds.py" seeds "$out/seeds" >/dev/null
"$python" "$here/scripts/fuzz_shim_seeds.py" hostile "$out/hostile" >/dev/null
"$out/fuzz_reply_replay" "$out/hostile"/* >/dev/null  # the regression set first: a sanitizer report fails here

cd "$out"
rm -f crash-* leak-* timeout-* oom-*
runs=()
[ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
set +e
./fuzz_reply -max_total_time="$seconds" "${runs[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus seeds 2>fuzz.log
rc=$?
set -e
final="$(grep -E '^#[0-9]+[[:space:]]+DONE' fuzz.log | tail -1)"
[ -n "$final" ] || final="$(grep -E '^#[0-9]+' fuzz.log | tail -1)"
execs="$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz.log)"
rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' fuzz.log)"
cov="$(echo "$final" | grep -oE 'cov: [0-9]+' || true)"
ft="$(echo "$final" | grep -oE 'ft: [0-9]+' || true)"
shopt -s nullglob; crashes=(crash-* leak-* timeout-* oom-*); shopt -u nullglob
echo "fuzz-shim: ${execs:-?} executions in ${seconds} s (${rate:-?} exec/s), ${cov:-cov: ?}, ${ft:-ft: ?}," \
  "corpus $(ls corpus | wc -l) inputs, ${#crashes[@]} crashes"
if [ "$rc" -ne 0 ] || [ ${#crashes[@]} -gt 0 ]; then
  grep -E 'ERROR|SUMMARY|broken|runtime error' fuzz.log | head -20 >&2 || true
  echo "fuzz-shim: FAILED (libFuzzer exit $rc; inputs: ${crashes[*]:-none}; log $out/fuzz.log)" >&2
  echo "fuzz-shim: replay one with $out/fuzz_reply_replay <input>" >&2
  exit 1
fi
