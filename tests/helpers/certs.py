"""Throwaway self-signed certificates for TLS tests, made with the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate that is its own CA: give `cert` to clients as the CA bundle."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_cert(
    directory: Path,
    names: Sequence[str] = ("dns.test", "localhost"),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
) -> CertFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("the openssl command is needed to make test certificates")
    files = CertFiles(directory / "cert.pem", directory / "key.pem")
    san = ",".join([f"DNS:{name}" for name in names] + [f"IP:{ip}" for ip in ips])
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-days", "2", "-subj", f"/CN={names[0]}"]
    command += ["-addext", f"subjectAltName={san}"]
    command += ["-keyout", str(files.key), "-out", str(files.cert)]
    subprocess.run(command, check=True, capture_output=True)
    return files
