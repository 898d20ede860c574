"""A throwaway self-signed TLS certificate for loopback servers (made with the openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.services import require_binary


class CertFiles(NamedTuple):
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """PEM certificate and key valid for ``localhost`` and ``127.0.0.1`` (an EC key: fast)."""
    openssl = require_binary("openssl")
    directory = tmp_path_factory.mktemp("tls")
    files = CertFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            openssl, "req", "-x509", "-nodes", "-days", "2",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(files.key), "-out", str(files.cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return files
