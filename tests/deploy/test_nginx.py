"""nginx in front of the prod compose stack: `nginx -t` accepts the configuration (with a throwaway
certificate), and the proxying is safe for SSE and WebSockets."""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import COMPOSE_DIR, find_tool, run

CONF = COMPOSE_DIR / "nginx" / "nginx.conf"


def self_signed(certs: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coca.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certs.mkdir()
    (certs / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (certs / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_nginx_accepts_the_configuration(tmp_path: Path):
    shutil.copy(CONF, tmp_path / "nginx.conf")
    self_signed(tmp_path / "certs")
    nginx = find_tool("nginx")
    proc = run(
        [
            nginx,
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "error.log"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def _location(text: str, path: str) -> str:
    """The block of `location [=] path` in the TLS server (the last server block)."""
    text = text.split("listen 443", 1)[1]
    found = re.search(r"location\s+(?:=\s+)?" + re.escape(path) + r"\s*\{([^}]*)\}", text)
    assert found, f"no location {path}"
    return found.group(1)


def test_nginx_streams_sse_and_upgrades_websockets():
    text = CONF.read_text()
    assert re.search(r"^\s*proxy_buffering off;", text, re.M), "SSE needs unbuffered proxying"
    assert re.search(r"^\s*proxy_http_version 1\.1;", text, re.M)
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", text, re.M)
    assert timeout, "no proxy_read_timeout"
    assert int(timeout.group(1)) >= 3600, "streams stay open for long"
    ws = _location(text, "/ws")
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "$ws_gateway" in ws
    assert "$gateway" in _location(text, "/v1/")
    assert "$web" in _location(text, "/")


def test_nginx_serves_tls_and_redirects_plain_http():
    text = CONF.read_text()
    assert re.search(r"listen 443 ssl", text)
    assert "return 308 https://$host$request_uri;" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert re.search(r"location ~ \^/\(healthz\|readyz\|metrics\)\$ \{\s*return 404;", text), (
        "internal endpoints leak"
    )
