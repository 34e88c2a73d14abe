"""Image references are parsed and normalised as Docker's distribution/reference does."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument
from kobako.image.reference import familiar, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("name", "full", "short"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("debian:bookworm-slim", "docker.io/library/debian:bookworm-slim", "debian:bookworm-slim"),
        ("library/debian", "docker.io/library/debian:latest", "debian:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/t/app", "localhost:5000/t/app:latest", "localhost:5000/t/app:latest"),
        ("127.0.0.1:5000/a", "127.0.0.1:5000/a:latest", "127.0.0.1:5000/a:latest"),
        ("ghcr.io/a_b/c.d-e:V1.0_x", "ghcr.io/a_b/c.d-e:V1.0_x", "ghcr.io/a_b/c.d-e:V1.0_x"),
        ("a--b__c", "docker.io/library/a--b__c:latest", "a--b__c:latest"),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}", f"alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine:3@{DIGEST}", f"alpine:3@{DIGEST}"),
    ],
)  # fmt: skip
def test_normalises_as_docker(name: str, full: str, short: str) -> None:
    ref = parse(name)
    assert str(ref) == full
    assert ref.familiar == short
    assert familiar(full) == short


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", ""),
        (":tag", ""),
        ("Busybox", "must be lowercase"),
        ("app:", "bad tag"),
        ("app:-x", "bad tag"),
        ("app@sha256:abc", "bad digest"),
        ("a//b", ""),
        ("-a", ""),
        ("a/", ""),
        ("a:b:c", ""),
        ("a_", ""),
        ("a___b", ""),
        ("host:port/x", "bad registry host"),
        ("a" * 256, "255"),
    ],
)
def test_rejects_with_docker_s_message(name: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format") as e:
        parse(name)
    assert why in str(e.value)
    assert "\n" not in str(e.value)


_COMPONENT = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+){0,2}", fullmatch=True)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_DOMAIN = st.sampled_from(["", "localhost/", "ghcr.io/", "127.0.0.1:5000/", "docker.io/"])


@given(
    domain=_DOMAIN,
    path=st.lists(_COMPONENT, min_size=1, max_size=3),
    tag=st.none() | _TAG,
    digest=st.none() | st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
)
def test_round_trips(domain: str, path: list[str], tag: str | None, digest: str | None) -> None:
    # With no domain, a first component that looks like a host ("localhost", or holding a dot)
    # names a registry, as in Docker: "a.b/c" is the repository c on the host a.b.
    assume(not (domain == "" and len(path) > 1 and (path[0] == "localhost" or "." in path[0])))
    name = domain + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse(name)
    assert parse(str(ref)) == ref  # the full form parses to itself
    assert parse(ref.familiar) == ref  # and so does the familiar one
    assert ref.tag == (tag or (None if digest else "latest"))
    assert ref.digest == digest
    if domain in ("", "docker.io/"):
        assert ref.domain == "docker.io"
        assert ref.path == ("/".join(path) if len(path) > 1 else f"library/{path[0]}")


@given(st.text(max_size=40))
def test_never_crashes(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidArgument as e:
        assert "\n" not in str(e)
    else:
        assert parse(str(ref)) == ref
