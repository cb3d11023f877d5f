"""ferry benchmarks: `python -m bench [--quick] [--only NAME]` (from the repo root, PYTHONPATH=src).

Workloads live in bench/workloads/, shared set-up in bench/harness.py, the report
writer in bench/report.py; results go to bench/results/.
"""
