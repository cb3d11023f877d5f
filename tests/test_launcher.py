"""The C front (launcher/ferry.c, the installed `ferry` command): `ferry run` without a
Python start, the same statuses and messages as `python -m ferry run`, and everything it
does not handle handed to the Python CLI.

Two builds from this checkout: `front`, as installed (it hands off to this interpreter,
PYTHONPATH kept), and `c_only`, whose hand-off cannot work (its Python does not exist), so
a test that passes with it shows the run never left C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODES, MOUNT_PREFIX, ferry_env

from ferry import shimlib

NO_PYTHON = "/nonexistent/python-for-the-test"


@pytest.fixture(scope="session")
def front() -> Path:
    return shimlib.launcher_path()


@pytest.fixture(scope="session")
def c_only(tmp_path_factory) -> Path:
    return shimlib.build_launcher(tmp_path_factory.mktemp("c-only") / "ferry", python=NO_PYTHON)


@pytest.fixture(scope="session")
def agent_up() -> None:
    """The test session's host agent, answering (the C front hands off when none does)."""
    p = subprocess.run([sys.executable, "-m", "ferry", "agent", "start"], env=ferry_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def front_env(**extra: str) -> dict[str, str]:
    return {**ferry_env(), "FERRY_SHIM": str(shimlib.path()), **extra}


def run(binary: Path | list[str], *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    argv = [str(binary)] if isinstance(binary, Path) else binary
    return subprocess.run([*argv, *args], env=env or front_env(), capture_output=True, text=True, timeout=120, **kw)


PYTHON = [sys.executable, "-m", "ferry"]


def test_true(c_only, agent_up):
    p = run(c_only, "run", "--", "true")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


@pytest.mark.parametrize("cmd, status", [
    (["sh", "-c", "exit 3"], 3),
    (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["/nonexistent/program"], 127),
    (["no-such-command-anywhere"], 127),
    (["/etc/passwd"], 126),
])
def test_statuses_and_messages_are_pythons(c_only, agent_up, cmd, status):
    c = run(c_only, "run", "--", *cmd)
    py = run(PYTHON, "run", "--", *cmd)
    assert c.returncode == status, c.stderr
    assert (c.returncode, c.stdout, c.stderr) == (py.returncode, py.stdout, py.stderr)


def test_no_double_dash_and_mode_from_the_environment(c_only, agent_up):
    p = run(c_only, "run", "sh", "-c", 'echo "$FERRY_MODE ${LD_PRELOAD%% *}"',
            env=front_env(FERRY_RUN_MODE="direct"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"direct {shimlib.path()}\n"
    p = run(c_only, "run", "--mode=cache", "--", "sh", "-c", 'echo "$FERRY_MODE"', env=front_env(FERRY_RUN_MODE="direct"))
    assert p.stdout == "cache\n", p.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_mount_reads_and_writes_a_node(c_only, agent_up, node, mode):
    (node.root / "in.txt").write_text("from the node\n")
    m = MOUNT_PREFIX
    for mount in (["--mount", f"{m}={node.url}"], ["-m", f"{m}={node.url}/"], [f"--mount={m}={node.url}"]):
        (node.root / "out.txt").unlink(missing_ok=True)
        p = run(c_only, "run", "--mode", mode, *mount, "--", "sh", "-c",
                f"cat {m}/in.txt; echo written > {m}/out.txt")
        assert (p.returncode, p.stdout) == (0, "from the node\n"), p.stderr
        # the run returned after its write-back: the file is on the node now
        assert (node.root / "out.txt").read_text() == "written\n"


def test_a_subdir_mount_and_a_program_on_the_node(c_only, agent_up, node):
    (node.root / "sub").mkdir()
    script = node.root / "sub" / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $0\n")
    script.chmod(0o755)
    m = MOUNT_PREFIX
    p = run(c_only, "run", "-m", f"{m}={node.url}/sub", "--", f"{m}/hello.sh")
    assert (p.returncode, p.stdout) == (0, f"hello from {m}/hello.sh\n"), p.stderr
    p = run(c_only, "run", "--", f"{node.remote}/sub/hello.sh")
    assert (p.returncode, p.stdout) == (0, f"hello from {node.remote}/sub/hello.sh\n"), p.stderr


def test_signals_reach_the_program(c_only, agent_up):
    proc = subprocess.Popen([str(c_only), "run", "--", "sh", "-c",
                             'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done'],
                            env=front_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (7, "got TERM\n"), err


def test_agent_messages_reach_the_runs_stderr(c_only, agent_up):
    m = MOUNT_PREFIX
    p = run(c_only, "run", "--mount", f"{m}=ferry://127.0.0.1:1", "--", "cat", f"{m}/f")
    assert p.returncode != 0 and "127.0.0.1:1" in p.stderr, p.stderr


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--tls", "--", "true"],
    ["-m/x=ferry://127.0.0.1:1", "--", "true"],  # click's attached short value
    ["--mount", "/x=ferry://127.0.0.1:1?tls=1", "--", "true"],  # URL options: Python checks them
    ["--mount", "/x/=ferry://127.0.0.1:1", "--", "true"],  # a prefix Python normalises
    ["--mode", "direct"],  # no command: click's usage error
])
def test_what_it_does_not_handle_goes_to_python(front, c_only, agent_up, args):
    handed = run(c_only, "run", *args)
    assert handed.returncode == 125 and f"cannot start {NO_PYTHON}" in handed.stderr, handed.stderr
    c, py = run(front, "run", *args), run(PYTHON, "run", *args)
    assert (c.returncode, c.stdout, c.stderr) == (py.returncode, py.stdout, py.stderr)


def test_token_file_is_pythons_and_works(front, agent_up, tmp_path, node):
    token = tmp_path / "node.token"
    subprocess.run([*PYTHON, "keygen", "--out", str(token)], env=ferry_env(), check=True, capture_output=True)
    p = run(front, "run", "--token-file", str(token), "--", "sh", "-c", "echo ok")
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr


@pytest.mark.parametrize("spec", ["nonsense", "data=ferry://127.0.0.1:7070", "/data=http://127.0.0.1:7070",
                                  "/data=ferry://127.0.0.1:99999", "/data=ferry://127.0.0.1:7070/../up",
                                  "/REMOTE@x=ferry://127.0.0.1:7070"])
def test_a_bad_mount_gets_pythons_error(front, agent_up, spec):
    p = run(front, "run", "--mount", spec, "--", "true")
    assert p.returncode == 125 and p.stderr.startswith("ferry run: "), p.stderr


def test_overlapping_mounts_get_pythons_error(front, agent_up):
    p = run(front, "run", "-m", "/a=ferry://127.0.0.1:1", "-m", "/a/b=ferry://127.0.0.1:2", "--", "true")
    assert p.returncode == 125 and "overlap" in p.stderr, p.stderr


def test_other_subcommands_and_the_private_agent_are_pythons(front, c_only, agent_up):
    p = run(front, "--version")
    assert p.returncode == 0 and "version" in p.stdout, p.stderr
    p = run(front, "agent", "status")
    assert p.returncode == 0 and "ferry agent pid" in p.stdout, p.stderr
    handed = run(c_only, "run", "--", "true", env=front_env(FERRY_AGENT="private"))
    assert f"cannot start {NO_PYTHON}" in handed.stderr
    p = run(front, "run", "--", "sh", "-c", "echo private", env=front_env(FERRY_AGENT="private"))
    assert (p.returncode, p.stdout) == (0, "private\n"), p.stderr


def test_with_no_agent_python_starts_one(front, c_only, tmp_path):
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = front_env(XDG_RUNTIME_DIR=str(runtime))
    try:
        handed = run(c_only, "run", "--", "true", env=env)
        assert f"cannot start {NO_PYTHON}" in handed.stderr, handed.stderr
        p = run(front, "run", "--", "sh", "-c", "echo first", env=env)  # handed off; the agent starts
        assert (p.returncode, p.stdout) == (0, "first\n"), p.stderr
        p = run(c_only, "run", "--", "sh", "-c", "echo second", env=env)  # that agent answers C now
        assert (p.returncode, p.stdout) == (0, "second\n"), p.stderr
    finally:
        subprocess.run([*PYTHON, "agent", "stop"], env=env, capture_output=True, timeout=60)


def test_an_agent_dir_open_to_others_is_refused_by_python(front, tmp_path):
    runtime = tmp_path / "rt"
    (runtime / "ferry").mkdir(parents=True)
    os.chmod(runtime / "ferry", 0o755)
    p = run(front, "run", "--", "true", env=front_env(XDG_RUNTIME_DIR=str(runtime)))
    assert p.returncode == 125 and "mode 0700" in p.stderr, p.stderr


def test_a_change_left_waiting_for_its_node_exits_125_saying_so(c_only, agent_up, tmp_path):
    """The node goes away while the run's change waits to be written back: the run says it
    waits (as run.py does) and exits 125; the node back, `ferry sync` sends it."""
    from conftest import start_node
    n = start_node(tmp_path / "export")
    m = MOUNT_PREFIX
    p = run(c_only, "run", "--mount", f"{m}={n.url}", "--", "sh", "-c",
            f"ls {m} >/dev/null; kill {n.proc.pid}; sleep 0.5; echo x > {m}/f",
            env=front_env(FERRY_CONNECT_TIMEOUT="1", FERRY_CALL_TIMEOUT="2"))
    n.stop()
    assert p.returncode == 125, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("ferry run: ")]
    assert " wait for node " in lines[-1] and n.hostport in lines[-1], p.stderr
    assert not [ln for ln in lines if "could not be written back" in ln], p.stderr
    back = start_node(n.root, "--listen", n.hostport)
    try:
        sync = run(PYTHON, "sync")
        assert sync.returncode == 0, sync.stderr
        assert (n.root / "f").read_text() == "x\n"
    finally:
        back.stop()


def test_a_session_the_agent_refuses_is_reported_as_python_does(c_only, agent_up):
    env = front_env(FERRY_CONNECT_TIMEOUT="abc")  # the agent reads the run's timeouts
    c, py = run(c_only, "run", "--", "true", env=env), run(PYTHON, "run", "--", "true", env=env)
    assert c.returncode == 125 and "SESSION_OPEN: Invalid argument" in c.stderr, c.stderr
    assert (c.returncode, c.stderr) == (py.returncode, py.stderr)


@pytest.mark.parametrize("which", ["c", "python"])
def test_no_wait_exits_with_the_program_and_the_agent_writes_back_behind(c_only, agent_up, node, which):
    """`ferry run --no-wait`: the program's status at once, no SESSION_END; the session ends
    as a killed run's does and the agent writes it back; `ferry sync` waits for it."""
    m = MOUNT_PREFIX
    binary = c_only if which == "c" else PYTHON
    p = run(binary, "run", "--no-wait", "--mount", f"{m}={node.url}", "--", "sh", "-c",
            f"mkdir {m}/nw-{which} && for i in $(seq 50); do echo $i > {m}/nw-{which}/f$i; done; exit 3")
    assert (p.returncode, p.stderr) == (3, "")
    sync = run(PYTHON, "sync")
    assert sync.returncode == 0, sync.stderr
    d = node.root / f"nw-{which}"
    assert sorted(os.listdir(d), key=lambda n: int(n[1:])) == [f"f{i}" for i in range(1, 51)]
    assert (d / "f42").read_text() == "42\n"
