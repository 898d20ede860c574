"""Server URL and environment resolution of conveyor.client (no server needed)."""

from __future__ import annotations

import pytest

from conveyor.client import DEFAULT_URL, ServerAddress, parse_url, resolve_url


def test_default_is_localhost_7419() -> None:
    assert DEFAULT_URL == "tcp://localhost:7419"
    assert resolve_url(None, {}) == ServerAddress("localhost", 7419)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:7500", ServerAddress("127.0.0.1", 7500)),
        ("tcp://example.com", ServerAddress("example.com", 7419)),
        ("tcp://:s3cret@h:1", ServerAddress("h", 1, password="s3cret")),
        ("tcp://user:pw@h:1", ServerAddress("h", 1, password="pw", username="user")),
        ("tcp://:p%40ss%3Aw@h:1", ServerAddress("h", 1, password="p@ss:w")),
        ("tcp+tls://h:7419", ServerAddress("h", 7419, tls=True)),
        ("tcp+tls://:pw@h", ServerAddress("h", 7419, tls=True, password="pw")),
        ("tcp://[::1]:7419", ServerAddress("::1", 7419)),
        ("tcp://h:1/", ServerAddress("h", 1)),
    ],
)
def test_parse_url(url: str, expected: ServerAddress) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:1", "scheme"),
        ("http://h", "scheme"),
        ("h:7419", "scheme"),
        ("tcp://h:notaport", "invalid port"),
        ("tcp://h:99999", "invalid port"),
        ("tcp://:7419", "no host"),
        ("tcp://h:1/path", "path"),
        ("tcp://h:1?x=1", "path"),
    ],
)
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_url(url)
    assert url in str(info.value)


def test_url_without_credentials_is_safe_to_log() -> None:
    assert parse_url("tcp+tls://:secret@h:9").url == "tcp+tls://h:9"
    assert parse_url("tcp://[::1]:9").url == "tcp://[::1]:9"


def test_explicit_url_wins_over_environment() -> None:
    env = {"CONVEYOR_URL": "tcp://c:1", "FAKTORY_URL": "tcp://f:2"}
    assert resolve_url("tcp://x:3", env).host == "x"


def test_conveyor_url_wins_over_faktory_url() -> None:
    env = {"CONVEYOR_URL": "tcp://c:1", "FAKTORY_URL": "tcp://f:2", "FAKTORY_PROVIDER": "P"}
    assert resolve_url(None, env) == ServerAddress("c", 1)


def test_faktory_url() -> None:
    assert resolve_url(None, {"FAKTORY_URL": "tcp+tls://f:2"}) == ServerAddress("f", 2, tls=True)


def test_faktory_provider_names_the_variable() -> None:
    env = {"FAKTORY_PROVIDER": "MY_FAKTORY", "MY_FAKTORY": "tcp://p:5", "FAKTORY_URL": "tcp://f:2"}
    assert resolve_url(None, env) == ServerAddress("p", 5)


def test_faktory_provider_pointing_at_nothing_uses_the_default() -> None:
    env = {"FAKTORY_PROVIDER": "UNSET_VARIABLE", "FAKTORY_URL": "tcp://f:2"}
    assert resolve_url(None, env) == ServerAddress("localhost", 7419)


def test_faktory_provider_must_be_a_name_not_a_url() -> None:
    with pytest.raises(ValueError, match="FAKTORY_PROVIDER"):
        resolve_url(None, {"FAKTORY_PROVIDER": "tcp://p:5"})


def test_faktory_password_fills_in_a_missing_password() -> None:
    env = {"FAKTORY_URL": "tcp://f:2", "FAKTORY_PASSWORD": "pw"}
    assert resolve_url(None, env).password == "pw"
    assert resolve_url("tcp://:inurl@f:2", env).password == "inurl"


def test_real_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    monkeypatch.delenv("FAKTORY_PASSWORD", raising=False)
    monkeypatch.setenv("CONVEYOR_URL", "tcp://from-env:4242")
    assert resolve_url() == ServerAddress("from-env", 4242)
