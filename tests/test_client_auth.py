"""The client's handshake with a password and over TLS, against real servers."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from conveyor.client import Client
from conveyor.errors import AuthenticationError, ConnectError
from tests.support.server import MakeServer
from tests.support.tls import CertFiles

PASSWORD = "s3cret pass"  # a space on purpose: the hash covers the raw text


@pytest.fixture
def tls_files(self_signed_cert: CertFiles) -> tuple[Path, Path]:
    return self_signed_cert.cert, self_signed_cert.key


async def test_password_from_argument(make_server: MakeServer) -> None:
    server = await make_server(password=PASSWORD)
    address = f"tcp://127.0.0.1:{server.port}"
    async with await Client.connect(address, password=PASSWORD) as client:
        assert (await client.info())["server"]["connections"] == 1


async def test_password_from_url_is_unquoted(make_server: MakeServer) -> None:
    server = await make_server(password=PASSWORD)
    async with await Client.connect(f"tcp://:s3cret%20pass@127.0.0.1:{server.port}") as client:
        assert await client.push({"jobtype": "Auth", "args": []})


async def test_password_from_faktory_password(make_server: MakeServer) -> None:
    server = await make_server(password=PASSWORD)
    environ = {"FAKTORY_URL": f"tcp://127.0.0.1:{server.port}", "FAKTORY_PASSWORD": PASSWORD}
    async with await Client.connect(environ=environ) as client:
        assert (await client.info())["faktory"]["total_enqueued"] == 0


async def test_wrong_password_raises_authentication_error(make_server: MakeServer) -> None:
    server = await make_server(password=PASSWORD)
    with pytest.raises(AuthenticationError, match="refused the password"):
        await Client.connect(f"tcp://127.0.0.1:{server.port}", password="wrong")


async def test_missing_password_says_how_to_give_one(make_server: MakeServer) -> None:
    server = await make_server(password=PASSWORD)
    with pytest.raises(AuthenticationError, match=r"requires a password.*FAKTORY_PASSWORD"):
        await Client.connect(f"tcp://127.0.0.1:{server.port}", environ={})


async def test_password_is_ignored_by_a_server_without_one(make_server: MakeServer) -> None:
    server = await make_server()
    async with await Client.connect(server.url, password="unused") as client:
        assert (await client.info())["server"]["connections"] == 1


async def test_tls_with_a_trusted_context(
    make_server: MakeServer, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server = await make_server(tls_cert=cert, tls_key=key, password=PASSWORD)
    assert server.url.startswith("tcp+tls://")
    context = ssl.create_default_context(cafile=str(cert))
    async with await Client.connect(server.url, tls=context) as client:
        jid = await client.push({"jobtype": "Secure", "args": [1]})
        fetched = await client.fetch("default")
        assert fetched is not None
        assert fetched["jid"] == jid


async def test_tls_verifies_the_certificate(
    make_server: MakeServer, tls_files: tuple[Path, Path]
) -> None:
    server = await make_server(tls_cert=tls_files[0], tls_key=tls_files[1])
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await Client.connect(server.url)  # tcp+tls:// -> the system's default trust store


async def test_plain_client_against_tls_server_fails_cleanly(
    make_server: MakeServer, tls_files: tuple[Path, Path]
) -> None:
    server = await make_server(tls_cert=tls_files[0], tls_key=tls_files[1])
    with pytest.raises(ConnectError):
        await Client.connect(f"tcp://127.0.0.1:{server.port}", tls=False, timeout=0.3)
