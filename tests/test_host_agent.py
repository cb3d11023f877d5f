"""The host agent: one per user, serving every `ferry run` as a session, outliving them.

Each test that needs an agent of its own (to stop it, to break its directory) gives it a
runtime dir of its own; the others share the test session's agent (conftest).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MOUNT_PREFIX, ferry_env, ferry_run


def agent_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "agent", *args], capture_output=True, text=True,
                          env=env or ferry_env(), timeout=60)


def wait_for(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def own_agent(tmp_path):
    """An environment whose runs reach a host agent of their own; stopped afterwards."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = {**ferry_env(), "XDG_RUNTIME_DIR": str(runtime)}
    yield env
    agent_cli("stop", env=env)


def test_a_background_process_outlives_its_run(node):
    """A job the program left behind keeps reading and writing ferry files after `ferry run`
    returned, and what it writes lands on the node."""
    (node.root / "in.txt").write_text("input\n")
    m = MOUNT_PREFIX
    script = (f"(sleep 2; cat {m}/in.txt > {m}/copy.txt; echo late >> {m}/copy.txt) "
              "</dev/null >/dev/null 2>&1 &")
    ferry_run(["sh", "-c", script], mounts=(f"{m}={node.url}",))
    assert not (node.root / "copy.txt").exists()  # the run did not wait for the job
    wait_for(lambda: (node.root / "copy.txt").exists() and (node.root / "copy.txt").read_text() == "input\nlate\n",
             what="the background job's file on the node")


def test_status_shows_sessions_and_stop_ends_the_agent(node, own_agent):
    env = own_agent
    m = MOUNT_PREFIX
    args = [sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "sh", "-c",
            f"exec 3< {m}/x; echo started; read line"]
    (node.root / "x").write_text("")
    run = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert run.stdout.readline() == "started\n"
        st = agent_cli("status", "--json", env=env)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        (s,) = status["sessions"]
        assert s["prefixes"] == [m] and s["mode"] == "cache" and not s["ended"] and s["programs"] >= 1
        assert s["ops"].get("CACHE_OPEN", 0) >= 1 and s["ops"].get("HELLO", 0) >= 1, s["ops"]  # the shim's calls
        assert s["nodes"][0]["node"].endswith(f":{node.url.rsplit(':', 1)[1]}") and s["nodes"][0]["connected"]
        text = agent_cli("status", env=env).stdout
        assert f"session {s['id']} (cache, running): {m}" in text
        run.stdin.write("\n")
        run.stdin.flush()
        assert run.wait(30) == 0
    finally:
        if run.poll() is None:
            run.kill()
    pid = status["pid"]
    stop = agent_cli("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
             what="the agent to exit")
    gone = agent_cli("status", env=env)
    assert gone.returncode == 3 and "not running" in gone.stdout
    # the next run starts a new one
    p = subprocess.run([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "cat", f"{m}/x"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(agent_cli("status", "--json", env=env).stdout)["pid"] != pid


def test_runs_with_different_mounts_side_by_side(tmp_path):
    """Two runs at once, each with its own mount table (the same prefix to different nodes)."""
    from conftest import start_node
    a, b = start_node(tmp_path / "a"), start_node(tmp_path / "b")
    try:
        (a.root / "f").write_text("from a\n")
        (b.root / "f").write_text("from b\n")
        m = MOUNT_PREFIX
        procs = [subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={n.url}", "--", "sh", "-c",
                                   f"sleep 0.5; cat {m}/f; echo {tag} > {m}/g"], env=ferry_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n, tag in ((a, "wrote a"), (b, "wrote b"))]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [o for o, _ in outs] == ["from a\n", "from b\n"], outs
        assert (a.root / "g").read_text() == "wrote a\n" and (b.root / "g").read_text() == "wrote b\n"
    finally:
        a.stop()
        b.stop()


KILLED_WRITER = """
import os, signal, sys
m = sys.argv[1]
def made(path, text, flags=os.O_CREAT | os.O_EXCL):
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    os.write(fd, text)
    return fd
made(m + "/a/b/new1", b"one\\n")           # made without asking the agent, in a listed dir
made(m + "/c/new2", b"two\\n")
os.rename(m + "/c", m + "/d")                # ... whose dir is then renamed
fd = made(m + "/a/f3", b"3a\\n", os.O_CREAT | os.O_TRUNC)  # opened through the agent
os.rename(m + "/a/f3", m + "/a/g3")          # renamed while open, then written again
os.write(fd, b"3b\\n")
os.kill(os.getpid(), signal.SIGKILL)         # nothing is closed
"""


def test_files_a_killed_program_never_closed_reach_the_node_in_a_later_run(node, tmp_path):
    """The end of a run writes back the files its programs wrote and never closed, looking
    only at what this run's programs touched: also in a second run of a warm cache, whose
    directories are listed (leased) already, so its exclusive creates never ask the agent,
    and after the directory or the file was renamed."""
    for d in ("a/b", "c", "other"):
        (node.root / d).mkdir(parents=True)
    (node.root / "other" / "keep").write_text("keep\n")
    m = MOUNT_PREFIX
    mounts = (f"{m}={node.url}",)
    ferry_run(["ls", "-R", m], mounts=mounts)  # the first run lists every directory
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITER)
    p = ferry_run([sys.executable, str(script), m], mounts=mounts, check=False)
    assert p.returncode == 128 + 9, p.stderr
    assert (node.root / "a" / "b" / "new1").read_text() == "one\n"
    assert (node.root / "d" / "new2").read_text() == "two\n" and not (node.root / "c").exists()
    assert (node.root / "a" / "g3").read_text() == "3a\n3b\n" and not (node.root / "a" / "f3").exists()
    assert sorted(p.name for p in node.root.rglob("*")) == ["a", "b", "d", "g3", "keep", "new1", "new2", "other"]


def test_a_killed_run_leaves_its_program_served(node):
    """SIGKILL of `ferry run` itself: the program goes on, its session with it."""
    m = MOUNT_PREFIX
    run = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "sh", "-c",
                            f"echo up; sleep 1.5; echo after > {m}/after.txt"], env=ferry_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert run.stdout.readline() == "up\n"
    run.kill()
    run.wait(10)
    wait_for(lambda: (node.root / "after.txt").exists() and (node.root / "after.txt").read_text() == "after\n",
             what="the orphaned program's write on the node")


def test_messages_for_a_run_reach_its_stderr(tmp_path):
    """A node that is not there: the run's own stderr says so (the agent writes to it)."""
    p = ferry_run(["cat", f"{MOUNT_PREFIX}/f"], mounts=(f"{MOUNT_PREFIX}=ferry://127.0.0.1:1",), check=False)
    assert p.returncode != 0 and "127.0.0.1:1" in p.stderr, p.stderr


def test_an_agent_dir_others_may_enter_is_refused(own_agent):
    env = own_agent
    d = Path(env["XDG_RUNTIME_DIR"]) / "ferry"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    p = subprocess.run([sys.executable, "-m", "ferry", "run", "--", "true"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 125 and str(d) in p.stderr and "0700" in p.stderr, p.stderr
    d.chmod(0o700)


def test_the_private_agent_still_serves_a_run(node):
    (node.root / "f").write_text("private\n")
    p = ferry_run(["sh", "-c", f"cat {MOUNT_PREFIX}/f; echo more >> {MOUNT_PREFIX}/f"],
                  mounts=(f"{MOUNT_PREFIX}={node.url}",), env_extra={"FERRY_AGENT": "private"})
    assert p.stdout == "private\n" and (node.root / "f").read_text() == "private\nmore\n"


def test_agent_start_is_idempotent(own_agent):
    env = own_agent
    first = agent_cli("start", env=env)
    assert first.returncode == 0 and "serving" in first.stdout, first.stderr
    pid = json.loads(agent_cli("status", "--json", env=env).stdout)["pid"]
    second = agent_cli("start", env=env)
    assert second.returncode == 0
    assert json.loads(agent_cli("status", "--json", env=env).stdout)["pid"] == pid
    os.kill(pid, signal.SIGTERM)  # a signal stops it as `stop` does
    wait_for(lambda: agent_cli("status", env=env).returncode != 0, what="the agent to go at SIGTERM")


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_ferry_env_gives_a_shell_the_mounts_until_unset(node, shell):
    """eval "$(ferry env …)": the shell's commands (not its own redirections: it was started
    before the shim) see the mounts; --unset writes the changes back and takes them away."""
    m = MOUNT_PREFIX
    (node.root / "in.txt").write_text("from node\n")
    script = (f'eval "$({sys.executable} -m ferry env --mount {m}={node.url})"\n'
              f"cat {m}/in.txt\n"
              f"sh -c 'echo made > {m}/out.txt'\n"
              f'eval "$({sys.executable} -m ferry env --unset)"\n'
              f'echo "vars: $FERRY_SOCK$FERRY_SESSION"\n'
              f"cat {m}/in.txt 2>/dev/null || echo gone\n")
    p = subprocess.run([shell, "-c", script], env=ferry_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "from node\nvars: \ngone\n", p.stdout + p.stderr
    assert (node.root / "out.txt").read_text() == "made\n"  # on the node by the time --unset returned


def test_ferry_shell_runs_a_shell_in_the_mounts(node):
    (node.root / "f").write_text("seen\n")
    p = subprocess.run([sys.executable, "-m", "ferry", "shell", "--mount", f"{MOUNT_PREFIX}={node.url}"],
                       env={**ferry_env(), "SHELL": "/bin/dash"}, input=f"cat {MOUNT_PREFIX}/f\n"
                       f"echo typed > {MOUNT_PREFIX}/g\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "seen\n", p.stderr
    assert (node.root / "g").read_text() == "typed\n"


def test_ferry_sync_waits_for_a_background_job(node, tmp_path):
    """`ferry sync` returns once what every session's programs closed is on the node."""
    m, closed = MOUNT_PREFIX, tmp_path / "closed"
    ferry_run(["sh", "-c", f"(head -c 64000000 /dev/zero > {m}/bg.bin; touch {closed}; sleep 3) "
                           "</dev/null >/dev/null 2>&1 &"], mounts=(f"{m}={node.url}",))
    wait_for(closed.exists, what="the job to close its file")  # its upload starts now, the job lives on
    p = subprocess.run([sys.executable, "-m", "ferry", "sync"], env=ferry_env(), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert (node.root / "bg.bin").stat().st_size == 64000000


def test_an_agent_of_another_build_makes_way(node, own_agent, tmp_path):
    """An agent started before an edit or an upgrade: when idle it stops for the new build's
    run; while another run uses it, the new run says so and uses it."""
    env = own_agent
    m = MOUNT_PREFIX
    (node.root / "f").write_text("x\n")
    assert agent_cli("start", env=env).returncode == 0
    old = json.loads(agent_cli("status", "--json", env=env).stdout)["pid"]
    src = Path(__file__).resolve().parents[1] / "src" / "ferry" / "agent" / "control.py"
    st = src.stat()
    try:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # "another build": a module changed
        p = subprocess.run([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "cat",
                            f"{m}/f"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout == "x\n", p.stderr
        new = json.loads(agent_cli("status", "--json", env=env).stdout)["pid"]
        assert new != old
        # busy with a session: the next build's run is served by it, with a message
        holder = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "sh",
                                   "-c", f"exec 3< {m}/f; echo up; read x"], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert holder.stdout.readline() == "up\n"
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2))
        p = subprocess.run([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "cat",
                            f"{m}/f"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout == "x\n" and "another build" in p.stderr, p.stderr
        assert json.loads(agent_cli("status", "--json", env=env).stdout)["pid"] == new
        holder.communicate("\n", timeout=30)
        wait_for(lambda: agent_cli("status", env=env).returncode == 3, what="the stale agent to exit when idle")
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_runs_started_at_once_share_one_new_agent(node, own_agent):
    """Eight runs and no agent yet: they race to start one; one wins, all are served by it."""
    env = own_agent
    m = MOUNT_PREFIX
    (node.root / "f").write_text("x\n")
    runs = [subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}={node.url}", "--", "sh", "-c",
                              f"cat {m}/f; echo {i} > {m}/out{i}"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0] * 8, outs
    assert all(o == "x\n" for o, _ in outs), outs
    assert sorted(p.name for p in node.root.glob("out*")) == [f"out{i}" for i in range(8)]
    status = json.loads(agent_cli("status", "--json", env=env).stdout)
    assert status["sessions_total"] == 8  # every run reached the one agent that answers


def test_writes_a_killed_agent_never_sent_reach_the_node_from_the_next_one(tmp_path, own_agent):
    """The node is away while a program writes (so nothing is sent), then the agent is
    SIGKILLed: the next agent finds the session's record and sends what its replica holds
    that the node never saw — new files and directories, rewritten files — and replays its
    journal: renames, removals, a chmod, a symlink; and nothing else."""
    from conftest import start_node
    env = own_agent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = start_node(tmp_path / "export", "--listen", f"127.0.0.1:{port}")
    (node.root / "old.txt").write_text("old\n")
    (node.root / "same.txt").write_text("untouched\n")
    (node.root / "shared.txt").write_text("v0\n")
    for name in ("moveme.txt", "removeme.txt", "chmodme.txt"):
        (node.root / name).write_text(f"{name}\n")
    (node.root / "chmodme.txt").chmod(0o644)
    (node.root / "olddir").mkdir()
    m = MOUNT_PREFIX
    ready, go, written = tmp_path / "ready", tmp_path / "go", tmp_path / "written"
    script = (f"ls {m} {m}/olddir >/dev/null; cat {m}/same.txt >/dev/null; touch {ready}; "
              f"while [ ! -e {go} ]; do sleep 0.05; done; "
              f"echo data > {m}/new.txt; echo changed > {m}/old.txt; mkdir {m}/nd; echo more > {m}/nd/g; "
              f"echo ours > {m}/shared.txt; mv {m}/moveme.txt {m}/nd/moved.txt; rm {m}/removeme.txt; "
              f"chmod 600 {m}/chmodme.txt; ln -s nd/g {m}/sym; rmdir {m}/olddir; "
              f"touch {written}; sleep 60")
    run = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}=ferry://127.0.0.1:{port}", "--",
                            "sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    node2 = None
    try:
        wait_for(ready.exists, what="the program to list the mount")
        node.stop()  # from now on nothing reaches the node
        go.touch()
        wait_for(written.exists, what="the program's writes")
        pid = json.loads(agent_cli("status", "--json", env=env).stdout)["pid"]
        os.kill(pid, signal.SIGKILL)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
        assert (node.root / "old.txt").read_text() == "old\n" and not (node.root / "new.txt").exists()
        time.sleep(0.02)
        (node.root / "shared.txt").write_text("another client's\n")  # changed on the node meanwhile
        node2 = start_node(node.root, "--listen", f"127.0.0.1:{port}")
        assert agent_cli("start", env=env).returncode == 0  # a new agent: it recovers what the old one left
        wait_for(lambda: (node.root / "nd" / "g").exists() and (node.root / "new.txt").exists()
                 and (node.root / "old.txt").read_text() == "changed\n", what="the left changes on the node")
        assert (node.root / "new.txt").read_text() == "data\n" and (node.root / "nd" / "g").read_text() == "more\n"
        assert (node.root / "same.txt").read_text() == "untouched\n"
        wait_for(lambda: not (node.root / "moveme.txt").exists(), what="the journal's changes on the node")
        assert (node.root / "nd" / "moved.txt").read_text() == "moveme.txt\n"
        assert not (node.root / "removeme.txt").exists() and not (node.root / "olddir").exists()
        assert (node.root / "chmodme.txt").stat().st_mode & 0o777 == 0o600
        assert os.readlink(node.root / "sym") == "nd/g"
        wait_for(lambda: json.loads(agent_cli("status", "--json", env=env).stdout)["unsent"] == [],
                 what="the record to go once all is sent")
        assert (node.root / "shared.txt").read_text() == "another client's\n"  # never overwritten
        (conflict,) = node.root.glob("shared.txt.ferry-conflict-*")
        assert conflict.read_text() == "ours\n"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        for n in (node, node2):
            if n is not None:
                n.stop()


def _sync(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "sync"], env=env, capture_output=True, text=True,
                          timeout=120)


def _stop(run: subprocess.Popen, *nodes) -> None:
    if run.poll() is None:
        run.kill()
    for n in nodes:
        if n is not None:
            n.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_changes_made_while_the_node_is_away_wait_for_it_and_never_overwrite_another_clients(tmp_path, own_agent):
    """The node goes away while a program makes changes: the run exits 125 saying they wait
    (nothing is lost, nothing is reported as written); the agent keeps them and, when the
    node is back, sends them in the order they were made.  A file another client rewrote
    meanwhile is not removed: the change is refused and said (`ferry agent status`)."""
    from conftest import start_node
    env = own_agent
    port = _free_port()
    node = start_node(tmp_path / "export", "--listen", f"127.0.0.1:{port}")
    for name, text in [("keep.txt", "kept\n"), ("gone.txt", "x\n"), ("theirs.txt", "v0\n")]:
        (node.root / name).write_text(text)
    m = MOUNT_PREFIX
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = (f"ls {m} >/dev/null; touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done; "
              f"echo new > {m}/new.txt && mkdir {m}/nd && echo g > {m}/nd/g && mv {m}/keep.txt {m}/kept.txt && "
              f"mv {m}/new.txt {m}/nd/new.txt && rm {m}/gone.txt {m}/theirs.txt && echo program-done")
    run = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}=ferry://127.0.0.1:{port}", "--",
                            "sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node2 = None
    try:
        wait_for(ready.exists, what="the program to list the mount")
        node.stop()
        go.touch()
        out, err = run.communicate(timeout=60)
        assert out == "program-done\n", err
        assert run.returncode == 125, err
        assert "wait for node" in err and "cannot be reached" in err, err
        assert sorted(p.name for p in node.root.iterdir()) == ["gone.txt", "keep.txt", "theirs.txt"]
        (node.root / "theirs.txt").write_text("another client's\n")  # changed on the node meanwhile
        status = agent_cli("status", env=env).stdout
        assert "wait for node" in status and "kept in " in status, status
        node2 = start_node(node.root, "--listen", f"127.0.0.1:{port}")
        sync = _sync(env)
        # (the conflict is said by the sync that sent the change: the agent's own retry may be first)
        assert "wait for node" not in sync.stderr, sync.stderr
        assert sync.returncode == (125 if "conflict: unlink of /theirs.txt not done" in sync.stderr else 0), sync.stderr
        assert sorted(p.name for p in node.root.iterdir()) == ["kept.txt", "nd", "theirs.txt"]
        assert (node.root / "kept.txt").read_text() == "kept\n"
        assert (node.root / "nd" / "g").read_text() == "g\n" and (node.root / "nd" / "new.txt").read_text() == "new\n"
        assert (node.root / "theirs.txt").read_text() == "another client's\n"  # not removed
        status = json.loads(agent_cli("status", "--json", env=env).stdout)
        (lane,) = status["waiting"]
        assert lane["backlog"] == 0 and lane["down"] is None
        assert any("theirs.txt" in c for c in lane["conflicts"]), lane
    finally:
        _stop(run, node, node2)


def test_a_node_killed_during_tar_x_ends_with_every_file_once_it_is_back(tmp_path, own_agent):
    """SIGKILL the node while `tar x` writes back: the changes on the lost connection that
    had no answer are sent again, and the rest wait, so that once the node is back (same
    export, same port) it holds exactly the archive — nothing lost, nothing doubled."""
    import tarfile
    from conftest import start_node
    env = own_agent
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d:02}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d:02}" / f"f{i:03}").write_bytes(os.urandom(64 + i * 37))
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="t")
    port = _free_port()
    node = start_node(tmp_path / "export", "--listen", f"127.0.0.1:{port}")
    m = MOUNT_PREFIX
    run = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}=ferry://127.0.0.1:{port}", "--",
                            "tar", "xf", str(archive), "-C", m], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    node2 = None
    try:
        wait_for(lambda: sum(1 for _ in (node.root / "t").rglob("f*")) >= 100 if (node.root / "t").exists() else False,
                 what="some of the archive on the node")
        node.stop(signal.SIGKILL)
        got = sum(1 for _ in (node.root / "t").rglob("f*"))
        node2 = start_node(node.root, "--listen", f"127.0.0.1:{port}")
        out, err = run.communicate(timeout=120)
        assert run.returncode in (0, 125), err  # (125: the run ended before the node was back)
        sync = _sync(env)
        assert sync.returncode == 0, sync.stderr
        assert got < 2000, "the node was killed too late to show anything"
        want = {p.relative_to(src): p.read_bytes() for p in src.rglob("f*")}
        have = {p.relative_to(node.root / "t"): p.read_bytes() for p in (node.root / "t").rglob("f*")}
        assert have == want
        assert not [p for p in node.root.rglob("*") if "ferry" in p.name]  # no temporaries, no conflict copies
    finally:
        _stop(run, node, node2)


def test_changes_never_go_to_another_export_served_at_the_same_address(tmp_path, own_agent):
    """Changes wait while the node is away; a node that comes back at the same address with
    another export (NODE_ID differs) gets none of them — they wait, said — and the export
    they were made for gets them when it is served there again."""
    from conftest import start_node
    env = own_agent
    port = _free_port()
    node = start_node(tmp_path / "export", "--listen", f"127.0.0.1:{port}")
    (node.root / "a.txt").write_text("a\n")
    m = MOUNT_PREFIX
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = (f"ls {m} >/dev/null; touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done; "
              f"echo new > {m}/new.txt && rm {m}/a.txt")
    run = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{m}=ferry://127.0.0.1:{port}", "--",
                            "sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    others = []
    try:
        wait_for(ready.exists, what="the program to list the mount")
        node.stop()
        go.touch()
        _, err = run.communicate(timeout=60)
        assert run.returncode == 125 and "wait for node" in err, err
        others.append(start_node(tmp_path / "another-export", "--listen", f"127.0.0.1:{port}"))
        (others[0].root / "a.txt").write_text("another export's\n")
        sync = _sync(env)
        assert sync.returncode == 125 and "now serves another export" in sync.stderr, sync.stderr
        assert sorted(p.name for p in others[0].root.iterdir()) == ["a.txt"]
        assert (others[0].root / "a.txt").read_text() == "another export's\n"
        others[0].stop()
        others.append(start_node(node.root, "--listen", f"127.0.0.1:{port}"))
        sync = _sync(env)
        assert sync.returncode == 0, sync.stderr
        assert sorted(p.name for p in node.root.iterdir()) == ["new.txt"]
    finally:
        _stop(run, node, *others)
