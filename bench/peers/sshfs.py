"""sshfs over an `sshd` the bench starts on a free loopback port.

Throw-away ed25519 host and user keys in the temp dir, public-key login only, the
internal sftp server; `sshfs` with its default options (the ones a user gets) except
for the key and host-key checking.  Needs openssh-server, openssh-client, sshfs and
/dev/fuse.
"""

from __future__ import annotations

import getpass
import os

from ..harness import run_cmd, tail
from . import Daemon, Peer, Skip, ensure, free_port, need_fuse, wait_mounted, wait_port

NAME = "sshfs"
KIND = "fs"


def start(b) -> Peer:
    need_fuse()
    t = ensure(b, tools=["sshd", "ssh-keygen", "sshfs"], apt=["openssh-server", "openssh-client", "sshfs"])
    d = b.dir("peers", NAME, fresh=True)
    export, mnt = b.dir("peers", NAME, "export"), b.dir("peers", NAME, "mnt")
    for key in ("host_key", "user_key"):
        r = run_cmd([t["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], timeout=30)
        if r.rc != 0:
            raise Skip(f"ssh-keygen failed: {tail(r.stderr)}")
    auth = d / "authorized_keys"
    auth.write_text((d / "user_key.pub").read_text())
    auth.chmod(0o600)
    os.makedirs("/run/sshd", exist_ok=True)   # sshd's privilege-separation dir
    port = free_port()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {auth}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", f"PidFile {d / 'sshd.pid'}",
        "Subsystem sftp internal-sftp", ""]))
    peer = Peer(NAME, KIND, mount=mnt, backing=export,
                desc=f"`sshfs` {_version(t['sshfs'])} → `sshd` on 127.0.0.1:{port} (internal-sftp), default options")
    sshd = Daemon("sshd", [t["sshd"], "-D", "-e", "-f", str(d / "sshd_config")], d / "sshd.log")
    peer.daemons.append(sshd)
    try:
        wait_port(port, sshd)
        user = getpass.getuser()
        opts = ",".join([f"IdentityFile={d / 'user_key'}", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null",
                         "BatchMode=yes", f"port={port}", "LogLevel=ERROR"])
        fs = Daemon("sshfs", [t["sshfs"], "-f", "-o", opts, f"{user}@127.0.0.1:{export}", str(mnt)],
                    d / "sshfs.log")
        peer.daemons.append(fs)
        peer.mounts.append(mnt)
        if not wait_mounted(mnt, proc=fs):
            raise Skip(f"sshfs did not mount: {fs.log_tail(300)}; sshd: {sshd.log_tail(200)}")
    except BaseException:
        peer.stop()
        raise
    return peer


def _version(sshfs: str) -> str:
    r = run_cmd([sshfs, "--version"], timeout=10)
    for line in (r.stdout + r.stderr).split("\n"):
        if line.startswith("SSHFS version"):
            return line.split()[-1]
    return "?"
