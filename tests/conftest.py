"""Shared fixtures: real nodes (`ferry serve` processes on 127.0.0.1) and `ferry run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODES = ["cache", "direct"]


def ferry_env(tmp: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if tmp is not None:
        env["XDG_DATA_HOME"] = str(tmp / "xdg-data")
    return env


@pytest.fixture(scope="session", autouse=True)
def _isolated_xdg(tmp_path_factory):
    """Keep test caches, the embedded store and the host agent out of the user's: the tests
    have an agent of their own (its socket in their own runtime dir), stopped at the end."""
    base = tmp_path_factory.mktemp("xdg")
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "FERRY_AGENT_IDLE")}
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ["XDG_DATA_HOME"] = str(base / "data")
    runtime = base / "run"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    os.environ["FERRY_AGENT_IDLE"] = "120"  # gone soon even if the stop below never runs
    yield
    subprocess.run([sys.executable, "-m", "ferry", "agent", "stop"], env=ferry_env(), capture_output=True, timeout=120)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass
class Node:
    proc: subprocess.Popen
    root: Path
    url: str

    @property
    def hostport(self) -> str:
        return self.url[len("ferry://"):]

    @property
    def remote(self) -> str:
        """The ORFA path form of the export root."""
        return f"/REMOTE@{self.hostport}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)


def start_node(root: Path, *extra: str, wrap: list[str] = ()) -> Node:
    """A `ferry serve` of `root` on loopback; `wrap` is a command line to start it under
    (unshare, nsenter…), which must exec it."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([*wrap, sys.executable, "-m", "ferry", "serve", "--root", str(root), "--listen",
                             "127.0.0.1:0", *extra], stdout=subprocess.PIPE, env=ferry_env(), text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("ferry://"), f"ferry serve printed {line!r}"
    return Node(proc, root, line)


@pytest.fixture
def other_host(tmp_path):
    """What a run adds to its environment to be on another host, as far as ferry can tell:
    a host agent of its own (own runtime dir) with its own caches; the agent is stopped after."""
    runtime = tmp_path / "rt-other"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime), "XDG_CACHE_HOME": str(tmp_path / "cache-other"),
           "FERRY_CACHE_DIR": str(tmp_path / "replicas-other")}
    yield env
    subprocess.run([sys.executable, "-m", "ferry", "agent", "stop"], env={**ferry_env(), **env},
                   capture_output=True, timeout=60)


@pytest.fixture
def node(tmp_path):
    n = start_node(tmp_path / "export")
    yield n
    n.stop()


@pytest.fixture
def memory_node():
    """A node serving an in-memory tree (`root` is not a directory here)."""
    proc = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--memory", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, env=ferry_env(), text=True)
    n = Node(proc, Path("/nonexistent"), proc.stdout.readline().strip())
    yield n
    n.stop()


def node_stats(node: Node, reset: bool = False) -> dict:
    """The node's STATS counts (see spec.OPS): {"requests": {OP: n}, "connections": {...}, ...};
    with `reset`, zeroed after.  The asking connection is no part of them."""
    import asyncio
    import json

    from ferry.agent.links import credentials
    from ferry.agent.routes import parse_url
    from ferry.node.client import NodeClient

    async def ask() -> dict:
        addr, _ = parse_url(node.url)
        client = await NodeClient.connect(addr.host, addr.port, **credentials(addr))
        try:
            return json.loads((await client.call("STATS", reset=int(reset)))["counts"])
        finally:
            await client.close()

    return asyncio.run(ask())


def ferry_run(cmd: list[str], *, mode: str = "cache", mounts: tuple[str, ...] = (), cwd=None,
              timeout: float = 120, input: str | None = None, env_extra: dict | None = None,
              check: bool = True, run_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ferry", "run", "--mode", mode, *run_args]
    for m in mounts:
        args += ["--mount", m]
    env = ferry_env()
    env.update(env_extra or {})
    p = subprocess.run(args + ["--", *cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout, input=input, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"ferry run {cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def sh(script: str, **kw) -> subprocess.CompletedProcess:
    return ferry_run(["sh", "-c", script], **kw)


CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]


def compile_c(source: Path | str, out: Path, *flags: str) -> Path:
    """Build a test program at `out` from a .c file, or from C text (written beside `out`)."""
    if isinstance(source, str):
        text, source = source, out.with_suffix(".c")
        source.write_text(text)
    subprocess.run(["gcc", *CFLAGS, *flags, "-o", str(out), str(source)], check=True, timeout=120)
    return out


PATH_FORMS = ["orfa", "mount"]
MOUNT_PREFIX = "/mnt/x"


@dataclass
class Where:
    """One way of reaching a node from a program: a data mode and a path form.

    `base` is what the program writes in front of export-relative paths: the ORFA form
    /REMOTE@host:port, or a --mount prefix that `mounts` declares."""

    node: Node
    mode: str
    form: str

    @property
    def base(self) -> str:
        return self.node.remote if self.form == "orfa" else MOUNT_PREFIX

    @property
    def mounts(self) -> tuple[str, ...]:
        return () if self.form == "orfa" else (f"{MOUNT_PREFIX}={self.node.url}",)

    def path(self, rel: str = "") -> str:
        return self.base + ("/" + rel.lstrip("/") if rel else "")

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return ferry_run(cmd, mode=self.mode, mounts=self.mounts, **kw)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kw)


WHERE_PARAMS = [pytest.param((m, f), id=f"{m}-{f}") for m in MODES for f in PATH_FORMS]


@pytest.fixture(autouse=True)
def _mount_prefix_stays_virtual():
    """A call the shim misses would create the mount prefix on the real file system."""
    yield
    leaked = Path(MOUNT_PREFIX)
    if leaked.exists():
        shutil.rmtree(leaked, ignore_errors=True)
        pytest.fail(f"{MOUNT_PREFIX} was created on the local file system")


@pytest.fixture(params=WHERE_PARAMS)
def where(request, node) -> Where:
    """The `node` reached in each data mode through each path form."""
    mode, form = request.param
    return Where(node, mode, form)
