"""Self-signed TLS certificates for loopback tests (openssl, one day, RSA 2048)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path, name: str, common_name: str | None = None) -> tuple[Path, Path]:
    """``folder/name.crt`` and ``folder/name.key``: a certificate valid for 127.0.0.1 (server or
    client), its subject CN ``common_name`` (default ``name``)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subject = f"/CN={common_name or name}"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            subject,
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
