#!/usr/bin/env python3
"""The corpus results (tests/test_corpus.py) as a markdown table: item x mode x shell,
pass/fail, the time on ferry and on a local directory.

    python scripts/corpus-table.py [RESULTS.json]     # default bench/results/corpus.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def table(results: list[dict]) -> str:
    rows = ["| project | mode | shell | result | ferry s | local s | ferry / local |",
            "|---|---|---|---|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["item"], r["mode"], r["shell"])):
        secs, local = r.get("seconds"), r.get("local_seconds")
        ratio = f"{secs / local:.1f}x" if secs and local else "-"
        result = "pass" if r["pass"] else "xfail (known)" if r.get("xfail") else "FAIL"
        rows.append(f"| {r['item']} | {r['mode']} | {r['shell']} | {result} | "
                    f"{secs if secs is not None else '-'} | {local if local is not None else '-'} | {ratio} |")
    return "\n".join(rows)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "corpus.json"
    data = json.loads(path.read_text())
    print(table(data["results"]))
    known = sorted({(r["item"], r["xfail"]) for r in data["results"] if r.get("xfail")})
    for item, why in known:
        print(f"\n- xfail {item}: {why}")
    if not data.get("full"):
        print("\n(short run: FERRY_CORPUS=full runs every combination)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
