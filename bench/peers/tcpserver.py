"""A loopback TCP server for the relay workload: `python -m bench.peers.tcpserver PORTFILE`.

Binds 127.0.0.1 on a free port (written to PORTFILE).  A connection whose first byte is
`E` is an echo (everything is sent back); `S` is a sink: everything up to EOF is counted,
then the count (8 bytes, big-endian, including the `S`) is sent back.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path


def serve(conn: socket.socket) -> None:
    with conn:
        first = conn.recv(1)
        if first == b"E":
            conn.sendall(first)
            while data := conn.recv(65536):
                conn.sendall(data)
        elif first == b"S":
            n = 1
            buf = bytearray(1 << 20)
            while k := conn.recv_into(buf):
                n += k
            conn.sendall(n.to_bytes(8, "big"))


def main() -> None:
    ls = socket.create_server(("127.0.0.1", 0), backlog=512)
    tmp = Path(sys.argv[1] + ".tmp")
    tmp.write_text(str(ls.getsockname()[1]))
    tmp.rename(sys.argv[1])
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
