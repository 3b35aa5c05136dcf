"""TLS settings: a server with a private CA; the right CA connects, no CA
(or a client certificate the server requires but does not get) fails clearly."""
from __future__ import annotations

import datetime as dt
import ipaddress

import pytest


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import run_async  # noqa: E402

from flusher.publisher import stream as st  # noqa: E402

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _cert(dirpath, name: str, issuer=None, ca: bool = False, san_ip: str | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer[0].subject if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san_ip:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))])
        b = b.add_extension(san, critical=False)
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    cp, kp = dirpath / f"{name}.pem", dirpath / f"{name}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cert, key, str(cp), str(kp)


@pytest.fixture
def pki(tmp_path):
    ca = _cert(tmp_path, "ca", ca=True)
    server = _cert(tmp_path, "server", issuer=ca, san_ip="127.0.0.1")
    client = _cert(tmp_path, "client", issuer=ca)
    return {"ca": ca[2], "server": server[2:], "client": client[2:]}


def _connect(bus):
    async def main():
        nc = await st.connect(bus)
        ok = nc.is_connected
        await nc.close()
        return ok
    return run_async(main())


def test_tls_with_the_right_ca(nats_server_factory, pki):
    srv = nats_server_factory(tls={"cert": pki["server"][0], "key": pki["server"][1]})
    assert _connect(st.parse_config({"servers": [srv.url], "tls": {"ca": pki["ca"]}}))
    with pytest.raises(st.NatsTLSError) as ei:     # the system CAs do not know ours
        _connect(st.parse_config({"servers": [srv.url], "tls": {}}))
    assert "certificate" in str(ei.value).lower()


def test_tls_client_certificate(nats_server_factory, pki):
    srv = nats_server_factory(tls={"cert": pki["server"][0], "key": pki["server"][1],
                                   "ca": pki["ca"], "verify": True})
    cert, key = pki["client"]
    assert _connect(st.parse_config({"servers": [srv.url],
                                     "tls": {"ca": pki["ca"], "cert": cert, "key": key}}))
    with pytest.raises(st.NatsUnreachable):
        _connect(st.parse_config({"servers": [srv.url], "tls": {"ca": pki["ca"]}}))
