"""Top frames of a py-spy flame graph SVG by inclusive samples (summed per function)."""
import collections, html, re, sys

for path in sys.argv[1:]:
    text = open(path).read()
    tot = collections.Counter()
    total = 0
    for t in re.findall(r"<title>(.*?)</title>", text, re.S):
        t = html.unescape(t)
        m = re.match(r"(.*) \((\d[\d,]*) samples, ([\d.]+)%\)", t)
        if not m:
            continue
        name, n = m.group(1), int(m.group(2).replace(",", ""))
        if name == "all":
            total = n
            continue
        tot[re.sub(r":\d+\)", ")", name)] += n
    print(f"== {path}: {total} samples")
    for name, n in tot.most_common(int(sys.argv[0] and 22)):
        print(f"{100 * n / max(total, 1):6.1f}%  {name[:150]}")
