"""The registry client's pure parts: WWW-Authenticate challenges, URLs, the daemon config."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument
from kobako.image import registry
from kobako.image.registry import Registry, parse_challenges, registry_host

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
    min_size=1,
    max_size=12,
)
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
CHALLENGE = st.tuples(TOKEN, st.dictionaries(TOKEN.map(str.lower), VALUE, max_size=4))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format(challenges: list[tuple[str, dict[str, str]]], sep: str) -> str:
    parts = []
    for scheme, params in challenges:
        items = [f"{k}={_quoted(v)}" for k, v in params.items()]
        parts.append(f"{scheme} {sep.join(items)}".rstrip())
    return sep.join(parts)


def test_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert parse_challenges(header) == [
        (
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        )
    ]


def test_several_challenges_and_odd_spacing() -> None:
    header = 'Basic realm = "a, b" , Bearer realm=https://x/t ,service="s\\"q", Negotiate abc=='
    assert parse_challenges(header) == [
        ("basic", {"realm": "a, b"}),
        ("bearer", {"realm": "https://x/t", "service": 's"q'}),
        ("negotiate", {}),
    ]


@given(st.lists(CHALLENGE, max_size=4), st.sampled_from([",", ", ", " , "]))
def test_challenges_round_trip(challenges: list[tuple[str, dict[str, str]]], sep: str) -> None:
    expected = [(scheme.lower(), params) for scheme, params in challenges]
    assert parse_challenges(_format(challenges, sep)) == expected


@given(st.text(max_size=200))
def test_any_header_parses_without_raising(header: str) -> None:
    for scheme, params in parse_challenges(header):
        assert scheme == scheme.lower()
        assert all(name == name.lower() for name in params)


@given(st.text(max_size=60))
def test_quote_round_trips_and_is_safe(text: str) -> None:
    quoted = registry._quote(text)
    assert unquote(quoted) == text
    assert not set(quoted) & set(" &=?#/:+\r\n")


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("https://auth.docker.io/token", ("https", "auth.docker.io", "/token")),
        ("http://127.0.0.2:5000/b?sig=1", ("http", "127.0.0.2:5000", "/b?sig=1")),
        ("HTTPS://h", ("https", "h", "/")),
        ("https://[::1]:443/x", ("https", "[::1]:443", "/x")),
    ],
)
def test_split_url(url: str, parts: tuple[str, str, str]) -> None:
    assert registry._split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://h/x", "/relative", "https://", "https://u:p@h/"])
def test_split_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        registry._split_url(url)


def test_registry_host() -> None:
    assert registry_host("docker.io") == "registry-1.docker.io"
    assert registry_host("index.docker.io") == "registry-1.docker.io"
    assert registry_host("ghcr.io") == "ghcr.io"
    assert registry_host("localhost:5000") == "localhost:5000"


@pytest.fixture
def daemon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "daemon.json"
    monkeypatch.setenv("KOBAKO_DAEMON_CONFIG", str(path))
    registry._CONFIG.clear()
    yield path
    registry._CONFIG.clear()


def _schemes(reg: Registry) -> tuple[str, ...]:
    return reg._endpoint.schemes


def test_plain_http_only_where_docker_allows_it(daemon_config: Path) -> None:
    daemon_config.write_text(
        json.dumps({"insecure-registries": ["registry.lan:5000", "10.1.0.0/16"]})
    )
    assert _schemes(Registry("localhost:5000")) == ("http", "https")
    assert _schemes(Registry("127.0.0.9:80")) == ("http", "https")
    assert _schemes(Registry("[::1]:5000")) == ("http", "https")
    assert _schemes(Registry("registry.lan:5000")) == ("https", "http")
    assert _schemes(Registry("10.1.2.3:5000")) == ("https", "http")
    assert _schemes(Registry("10.2.0.1:5000")) == ("https",)
    assert _schemes(Registry("registry.lan")) == ("https",)
    assert _schemes(Registry("ghcr.io")) == ("https",)
    assert _schemes(Registry("localhost:5000", insecure=False)) == ("https",)
    assert _schemes(Registry("ghcr.io", insecure=True)) == ("https", "http")
    assert _schemes(Registry("registry.lan:5000", use_config=False)) == ("https",)


def test_mirrors_serve_docker_hub_reads_only(daemon_config: Path) -> None:
    daemon_config.write_text(json.dumps({"registry-mirrors": ["https://mirror.lan:5000/"]}))
    hub = Registry("docker.io")
    assert [(ep.netloc, ep.schemes) for ep in hub._reads] == [
        ("mirror.lan:5000", ("https",)),
        ("registry-1.docker.io", ("https",)),
    ]
    assert [ep.netloc for ep in Registry("ghcr.io")._reads] == ["ghcr.io"]


def test_bad_daemon_config_is_named(daemon_config: Path) -> None:
    daemon_config.write_text("{not json")
    with pytest.raises(InvalidArgument, match=str(daemon_config)):
        Registry("registry.lan:5000")
