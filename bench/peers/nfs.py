"""NFS on loopback, where the kernel allows it.

Mounting NFS needs the kernel's NFS client (`nfs` in /proc/filesystems, loadable with
modprobe).  The server is the kernel's nfsd (nfs-kernel-server: rpcbind, rpc.nfsd,
rpc.mountd, an export of the temp dir to 127.0.0.1) when the kernel has it, else the
user-space nfs-ganesha (VFS backend, NFSv4 only).  The mount is `mount -t nfs -o
vers=4.2` (ganesha: 4.1) of 127.0.0.1 with default caching.  Otherwise: skipped, with
the reason in the report.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from ..harness import run_cmd, tail
from . import Daemon, Peer, Skip, ensure, free_port, wait_mounted, wait_port

NAME = "nfs"
KIND = "fs"


def _kernel_has(fs: str) -> bool:
    if shutil.which("modprobe") and os.geteuid() == 0:
        run_cmd(["modprobe", fs], timeout=30)
    names = {ln.split()[-1] for ln in Path("/proc/filesystems").read_text().splitlines() if ln.strip()}
    return fs in names


def _config_says(option: str) -> str:
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith((option + "=", f"# {option} is not set")):
                    return line.strip()
    except OSError:
        pass
    return ""


def start(b) -> Peer:
    if os.geteuid() != 0:
        raise Skip("mounting NFS needs root")
    if not _kernel_has("nfs"):
        cfg = _config_says("CONFIG_NFS_FS")
        raise Skip("this kernel has no NFS client (no `nfs` in /proc/filesystems, modprobe nfs failed"
                   + (f"; /proc/config.gz: `{cfg}`" if cfg else "") + "), so nothing can mount NFS here; "
                   "a user-space server (nfs-ganesha) would not help without a client")
    d = b.dir("peers", NAME, fresh=True)
    export, mnt = b.dir("peers", NAME, "export"), b.dir("peers", NAME, "mnt")
    export.chmod(0o777)
    peer = Peer(NAME, KIND, mount=mnt, backing=export)
    try:
        if _kernel_has("nfsd"):
            _kernel_server(b, peer, export)
            vers, port, server = "4.2", 2049, "kernel nfsd"
        else:
            port = _ganesha(b, peer, d, export)
            vers, server = "4.1", "nfs-ganesha (user space; the kernel has no nfsd)"
        src = "127.0.0.1:/" if server.startswith("nfs-ganesha") else f"127.0.0.1:{export}"
        r = run_cmd(["mount", "-t", "nfs", "-o", f"vers={vers},port={port},proto=tcp", src, str(mnt)],
                    timeout=60)
        if r.rc != 0:
            raise Skip(f"mount -t nfs failed (exit {r.rc}): {tail(r.stderr, 300)}")
        peer.mounts.append(mnt)
        if not wait_mounted(mnt):
            raise Skip("mount -t nfs returned but the mount did not appear")
        peer.desc = f"NFS v{vers} over TCP on 127.0.0.1 ({server}), default mount options"
    except BaseException:
        peer.stop()
        raise
    return peer


def _kernel_server(b, peer: Peer, export: Path) -> None:
    t = ensure(b, tools=["exportfs", "rpc.nfsd", "rpc.mountd", "rpcbind"], apt=["nfs-kernel-server", "rpcbind"])
    if not os.path.ismount("/proc/fs/nfsd"):
        run_cmd(["mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd"], timeout=30)
    run_cmd([t["rpcbind"], "-w"], timeout=30)
    r = run_cmd([t["exportfs"], "-o", "rw,sync,no_root_squash,no_subtree_check,insecure,fsid=4711",
                 f"127.0.0.1:{export}"], timeout=30)
    if r.rc != 0:
        raise Skip(f"exportfs failed: {tail(r.stderr, 300)}")
    peer.info["unexport"] = [t["exportfs"], "-u", f"127.0.0.1:{export}"]
    r = run_cmd([t["rpc.mountd"]], timeout=30)
    r = run_cmd([t["rpc.nfsd"], "4"], timeout=60)
    if r.rc != 0:
        raise Skip(f"rpc.nfsd failed: {tail(r.stderr, 300)}")
    stop = peer.stop

    def stop_all() -> None:
        stop()
        run_cmd(peer.info["unexport"], timeout=30)
    peer.stop = stop_all   # the kernel server itself stays up (it serves other exports too)


def _ganesha(b, peer: Peer, d: Path, export: Path) -> int:
    t = ensure(b, tools=["ganesha.nfsd"], apt=["nfs-ganesha", "nfs-ganesha-vfs"])
    port = free_port()
    conf = d / "ganesha.conf"
    conf.write_text(f"""NFS_CORE_PARAM {{ NFS_Port = {port}; Bind_addr = 127.0.0.1; Protocols = 4; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{
  Export_Id = 77; Path = {export}; Pseudo = /; Access_Type = RW; Squash = No_Root_Squash;
  SecType = sys; Protocols = 4; Transports = TCP;
  FSAL {{ Name = VFS; }}
}}
""")
    g = Daemon("ganesha.nfsd", [t["ganesha.nfsd"], "-F", "-f", str(conf), "-L", str(d / "ganesha.log"),
                                "-p", str(d / "ganesha.pid")], d / "ganesha.out")
    peer.daemons.append(g)
    wait_port(port, g, timeout=60)
    return port
