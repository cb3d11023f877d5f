"""The wheel `pip wheel .` builds carries the compiled shim and the C front, so installing
it needs no compiler, and the `ferry` it puts on PATH is the C front (an ELF binary, not a
Python script) that runs `ferry run -- true` itself once an agent is up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_the_shim_and_runs_without_a_compiler(node, tmp_path):
    out = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
                   check=True, timeout=600, cwd=tmp_path)
    [wheel] = out.glob("*.whl")
    assert wheel.name.startswith("ferry_run-"), wheel.name  # `ferry` on PyPI is someone else's project
    assert "-none-any" not in wheel.name, "a wheel with a compiled library must carry a platform tag"
    names = zipfile.ZipFile(wheel).namelist()
    assert "ferry/_lib/libferry.so" in names and "ferry/_lib/ferry" in names
    assert any(n.endswith(".data/data/bin/ferry") for n in names), names

    venv = tmp_path / "venv"  # the run's dependencies come from this interpreter's site-packages
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    # Into the venv whatever this interpreter has installed (an editable checkout, a PYTHONPATH):
    # pip would otherwise call the same version "already satisfied" and install no command.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True, timeout=300, env=clean)
    (node.root / "hello.txt").write_text("from the node\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CC"] = "/bin/false"  # any attempt to build the shim would fail
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    ferry = venv / "bin" / "ferry"
    assert ferry.read_bytes()[:4] == b"\x7fELF", "the installed ferry command must be the C front"
    assert (venv / "bin" / "ferry-py").exists()
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "rt")  # a host agent of the wheel's own, not the test session's
    (tmp_path / "rt").mkdir(mode=0o700)
    try:
        # no agent yet: handed to the venv's Python, which starts one
        p = subprocess.run([ferry, "run", "--", "cat", f"/REMOTE@{node.url[len('ferry://'):]}/hello.txt"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout == "from the node\n"
        status = subprocess.run([ferry, "agent", "status", "--json"], capture_output=True, text=True, env=env,
                                timeout=60)
        assert str(venv) in open(f"/proc/{json.loads(status.stdout)['pid']}/cmdline").read(), status
        # Now the C front runs it alone: under strace, no `python -m ferry` is started.
        trace = tmp_path / "trace"
        strace = ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace)] if shutil.which("strace") else []
        p = subprocess.run([*strace, ferry, "run", "--", "sh", "-c", "echo $FERRY_MODE"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=120)
        assert (p.returncode, p.stdout) == (0, "cache\n"), p.stderr
        if strace:
            assert '"-m", "ferry"' not in trace.read_text(), trace.read_text()
    finally:
        subprocess.run([ferry, "agent", "stop"], capture_output=True, env=env, timeout=60)

    where = subprocess.run([venv / "bin" / "python", "-c", "import ferry.shimlib as s; print(s.path())"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the packaged library, not one built from a checkout
