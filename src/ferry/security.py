"""Who may talk to a node: token files, the HELLO/AUTH challenge-response, TLS.

The token never crosses the network.  HELLO carries the client's nonce and the node answers
with its own; AUTH then carries HMAC-SHA256(token, "client", client nonce, node nonce) and
the node answers with HMAC-SHA256(token, "node", node nonce, client nonce), so each side
proves it holds the token, and a recorded proof is worthless on another connection (the
other side's nonce is new every time).  Proofs are compared in constant time.

TLS (the standard `ssl` module) hides the traffic; a client either verifies the node's
certificate against CAs or pins its SHA-256 fingerprint (`?tls-fingerprint=SHA256:…`), as
a self-signed pair from `ferry keygen --tls` needs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import ssl
import stat
from pathlib import Path

TOKEN_BYTES = 32
NONCE_BYTES = 16


class SecurityError(ValueError):
    """A token file, certificate or fingerprint that cannot be used; the message says what to do."""


def read_token(path: str | os.PathLike) -> bytes:
    """The secret in a token file; refused if others can read it (as ssh refuses a key)."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_bytes().strip()
    except OSError as e:
        raise SecurityError(f"token file {p}: {e.strerror}; make one with `ferry keygen --out {p}`") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"token file {p} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                            f"chmod 600 {p}")
    if len(text) < 16:
        raise SecurityError(f"token file {p} holds {len(text)} bytes; a token needs at least 16: "
                            f"make one with `ferry keygen --out {p}`")
    return text


def write_token(path: str | os.PathLike) -> Path:
    """A new random token in a new file of mode 0600 (an existing file is never replaced)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(TOKEN_BYTES) + "\n")
    return p


def nonce() -> bytes:
    return secrets.token_hex(NONCE_BYTES).encode()


def proof(token: bytes, role: bytes, mine: bytes, theirs: bytes) -> bytes:
    """What `role` ("client" or "node") sends to show it holds `token`, bound to both nonces."""
    msg = b"ferry-auth-v1\0" + role + b"\0" + mine + b"\0" + theirs
    return hmac.new(token, msg, hashlib.sha256).hexdigest().encode()


def proof_ok(token: bytes, role: bytes, mine: bytes, theirs: bytes, got: bytes) -> bool:
    return hmac.compare_digest(proof(token, role, mine, theirs), got)


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (a name is looked up)."""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


# --- TLS ---

def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise SecurityError(f"cannot load --tls-cert {cert} / --tls-key {key}: {e}; "
                            "make a pair with `ferry keygen --tls --out NAME`") from None
    return ctx


def client_context(fingerprint: str = "", ca_file: str = "") -> ssl.SSLContext:
    """Verify the node against `ca_file` (or the system's CAs); with a pinned fingerprint the
    certificate itself is what is checked (`check_fingerprint`), not a CA chain."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if fingerprint:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(ca_file)
    else:
        ctx.load_default_certs()
    return ctx


def parse_fingerprint(text: str) -> str:
    algo, _, hexes = text.partition(":")
    digest = hexes.replace(":", "").lower()
    if algo.upper() != "SHA256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SecurityError(f"bad tls-fingerprint {text!r}: write SHA256:<64 hex digits> "
                            "(`ferry keygen --tls` prints it)")
    return digest


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(der: bytes) -> str:
    return "SHA256:" + fingerprint_of(der)


def check_fingerprint(sslobj: ssl.SSLObject | ssl.SSLSocket | None, digest: str) -> None:
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if der is None:
        raise SecurityError("the node sent no TLS certificate")
    if not hmac.compare_digest(fingerprint_of(der), digest):
        raise SecurityError(f"the node's certificate is {format_fingerprint(der)}, not the pinned "
                            f"SHA256:{digest}: refusing to talk to it")


def write_self_signed(out: str, host: str = "localhost") -> tuple[Path, Path, str]:
    """NAME.crt and NAME.key (0600) for a self-signed pair; returns them and the fingerprint."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [x509.DNSName(host)]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        pass
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    crt_path, key_path = Path(out + ".crt"), Path(out + ".key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt_path, key_path, format_fingerprint(cert.public_bytes(serialization.Encoding.DER))
