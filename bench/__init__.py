"""ferry benchmarks: `python -m bench [--quick] [--only NAME]` (from the repo root, PYTHONPATH=src).

Workloads live in bench/workloads/, the peers (sshfs, NFS, s3fs on SeaweedFS, proxychains4 +
dante, lsyncd + rsync) in bench/peers/, shared set-up in bench/harness.py, the report
writer in bench/report.py; results go to bench/results/.  See bench/README.md.
"""
