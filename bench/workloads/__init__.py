"""One module per workload; each has NAME, TITLE and run(bench) -> list of report rows."""

from . import passthrough, seqio, startup, statlat, w1_gzip, w2_untar

ALL = [startup, passthrough, statlat, w1_gzip, w2_untar, seqio]
BY_NAME = {m.NAME: m for m in ALL}
