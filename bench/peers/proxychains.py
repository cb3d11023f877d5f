"""proxychains4 (proxychains-ng) through a dante SOCKS5 server (`danted`) on loopback.

`danted` listens on a free 127.0.0.1 port, no authentication, CONNECT allowed from and
to loopback only; programs run as `proxychains4 -q -f CONF PROG` with a strict chain of
that one proxy.  Needs the Debian packages proxychains4 and dante-server.
"""

from __future__ import annotations

from . import Daemon, Peer, ensure, free_port, wait_port

NAME = "proxychains"
KIND = "relay"


def start(b) -> Peer:
    t = ensure(b, tools=["proxychains4", "danted"], apt=["proxychains4", "dante-server"])
    d = b.dir("peers", NAME, fresh=True)
    port = free_port()
    (d / "danted.conf").write_text(f"""logoutput: {d / 'danted.log'}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }}
""")
    conf = d / "proxychains.conf"
    conf.write_text(f"strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n"
                    f"[ProxyList]\nsocks5 127.0.0.1 {port}\n")
    peer = Peer(NAME, KIND, desc=f"`proxychains4` (strict chain) → dante `danted` SOCKS5 on 127.0.0.1:{port}")
    dd = Daemon("danted", [t["danted"], "-f", str(d / "danted.conf"), "-p", str(d / "danted.pid")], d / "danted.out")
    peer.daemons.append(dd)
    try:
        wait_port(port, dd)
    except BaseException:
        peer.stop()
        raise
    peer.info["wrap"] = [t["proxychains4"], "-q", "-f", str(conf)]
    return peer


def wrap(peer: Peer, cmd: list[str]) -> list[str]:
    return [*peer.info["wrap"], *cmd]


