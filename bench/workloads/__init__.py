"""One module per workload; each has NAME, TITLE and run(bench) -> list of report rows."""

from . import (gitstatus, importstorm, load, mirror, passthrough, randread, relay, seqio, smallfiles, startup, statlat,
               w1_gzip, w2_runs, w2_untar)

ALL = [startup, passthrough, statlat, w1_gzip, w2_untar, w2_runs, smallfiles, seqio, randread, gitstatus, importstorm,
       mirror, relay, load]
BY_NAME = {m.NAME: m for m in ALL}
