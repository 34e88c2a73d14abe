"""``kobako logs`` and ``Container.logs`` on real detached containers."""

from __future__ import annotations

import calendar
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

import kobako
from kobako.errors import InvalidArgument
from kobako.image.store import ImageRecord, Store
from kobako.runtime import from_image, monitor
from kobako.runtime.containers import ContainerStore, is_running
from kobako.runtime.spec import Process, Spec
from tests.conftest import KOBAKO
from tests.conftest import kobako as cli
from tests.imagetools import make_image

pytestmark = pytest.mark.container

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z "
# the pauses keep the monitor from reading both pipes at once (it logs stdout first then)
MIXED = "echo out1; sleep 0.1; echo err1 >&2; sleep 0.1; echo 'out 2  spaced'; printf 'no newline'"


@pytest.fixture
def image(store: Store, busybox_tar: bytes) -> ImageRecord:
    return make_image(store, [busybox_tar], tag="bb:1", config={"Cmd": ["sh"]})


@contextlib.contextmanager
def container(
    store: Store, script: str, *, start: bool = True, wait: bool = True
) -> Iterator[dict[str, object]]:
    """A container running ``sh -c script`` under its monitor (waited for to its end if
    ``wait``); stopped and removed afterwards."""
    spec = Spec(root="", process=Process(args=("sh", "-c", script)))
    doc, final = from_image.create(store, "bb:1", spec)
    containers = ContainerStore(store)
    try:
        if start:
            doc = monitor.start_detached(store, doc, final)
        if wait:
            doc = monitor.wait_stopped(store, doc["Id"], timeout=30)
        yield doc
    finally:
        monitor.stop(store, containers.get(doc["Id"]), 0, "SIGKILL")
        containers.remove(containers.get(doc["Id"]))


def logs(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([KOBAKO, "logs", *args], capture_output=True, timeout=60)


def test_stdout_and_stderr_stay_apart(store: Store, image: ImageRecord) -> None:
    with container(store, MIXED) as doc:
        r = logs(str(doc["Id"])[:12])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"out1\nout 2  spaced\nno newline"
        assert r.stderr == b"err1\n"
        name = str(doc["Name"]).lstrip("/")
        r = logs(name, "--details")  # the name, a flag after it; --details is accepted
        assert (r.stdout, r.stderr) == (b"out1\nout 2  spaced\nno newline", b"err1\n")


def test_tail_counts_lines_from_the_end(store: Store, image: ImageRecord) -> None:
    with container(store, "for i in 1 2 3 4 5; do echo $i; done; echo oops >&2") as doc:
        cid = str(doc["Id"])
        assert logs("--tail", "2", cid).stdout == b"5\n"
        assert logs("--tail", "2", cid).stderr == b"oops\n"
        assert logs("-n", "3", cid).stdout == b"4\n5\n"
        assert logs("--tail=0", cid).stdout == b""
        assert logs("--tail", "all", cid).stdout == b"1\n2\n3\n4\n5\n"
        assert logs(cid, "--tail", "1", "--timestamps").stdout == b""


def test_timestamps_and_since_until(store: Store, image: ImageRecord) -> None:
    with container(store, "echo early; sleep 1.2; echo late; echo late-err >&2") as doc:
        cid = str(doc["Id"])
        r = logs("-t", cid)
        lines = r.stdout.splitlines(keepends=True)
        assert [re.sub(STAMP, b"", line) for line in lines] == [b"early\n", b"late\n"]
        assert all(re.match(STAMP, line) for line in lines), r.stdout
        assert re.fullmatch(STAMP + rb"late-err\n", r.stderr)
        early, late = (line.split(b" ", 1)[0].decode() for line in lines)

        assert logs("--since", late, cid).stdout == b"late\n"
        assert logs("--since", late, cid).stderr == b"late-err\n"
        assert logs("--until", early, cid).stdout == b"early\n"
        assert logs("--until", early, cid).stderr == b""
        assert logs("--since", "1h", cid).stdout == b"early\nlate\n"
        assert logs("--since=-1h", cid).stdout == b""  # an hour from now
        secs, frac = late.rstrip("Z").split(".")
        unix = calendar.timegm(time.strptime(secs, "%Y-%m-%dT%H:%M:%S"))
        assert logs("--since", f"{unix}.{frac}", cid).stdout == b"late\n"

        r = logs("--since", "yesterday", cid)
        assert r.returncode == 125
        assert r.stderr == (
            b'kobako: invalid value for "since": '
            b'failed to parse value as time or duration: "yesterday"\n'
        )


def test_follow_returns_once_the_container_exits(store: Store, image: ImageRecord) -> None:
    script = "echo start; echo err-start >&2; sleep 1; echo end; printf tail"
    with container(store, script, wait=False) as doc:
        cid = str(doc["Id"])
        proc = subprocess.Popen(
            [KOBAKO, "logs", "-f", cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"start\n"  # shown while it still runs
            assert is_running(ContainerStore(store).get(cid))
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert (out, err) == (b"end\ntail", b"err-start\n")
        assert not is_running(ContainerStore(store).get(cid))
        # following a stopped container returns at once
        r = logs("-f", "--tail", "1", cid)
        assert (r.returncode, r.stdout) == (0, b"tail")


def test_a_container_never_started_has_no_logs(store: Store, image: ImageRecord) -> None:
    with container(store, "echo hi", start=False, wait=False) as doc:
        r = logs("-f", str(doc["Id"]))
        assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_usage_errors(store: Store, image: ImageRecord) -> None:
    r = cli("logs", "no-such-container")
    assert r.returncode != 0 and "No such container: no-such-container" in r.stderr
    r = cli("logs")
    assert r.returncode == 125 and '"kobako logs" requires exactly 1 argument.' in r.stderr


def test_api_logs(root: str, store: Store, image: ImageRecord) -> None:
    with container(store, MIXED) as doc:
        c = kobako.Client(root).containers.get(str(doc["Id"]))
        assert c.logs() == b"out1\nerr1\nout 2  spaced\nno newline"
        assert c.logs(stderr=False) == b"out1\nout 2  spaced\nno newline"
        assert c.logs(stdout=False, tail=5) == b"err1\n"
        assert c.logs(tail=1) == b"no newline"
        assert c.logs(since=time.time() + 3600) == b""
        assert c.logs(until=0) == c.logs()  # not positive: no limit, as docker-py
        chunks = c.logs(stream=True)
        assert not isinstance(chunks, bytes)
        assert list(chunks) == [b"out1\n", b"err1\n", b"out 2  spaced\n", b"no newline"]
        stamped = c.logs(timestamps=True)
        assert isinstance(stamped, bytes)
        assert re.fullmatch(STAMP + b"out1\n" + STAMP + b"err1\n.*", stamped, re.S)
        with pytest.raises(InvalidArgument):
            c.logs(since="yesterday")  # type: ignore[arg-type]


def test_api_stream_follows_until_the_end(root: str, store: Store, image: ImageRecord) -> None:
    with container(store, "echo one; sleep 0.5; echo two", wait=False) as doc:
        c = kobako.Client(root).containers.get(str(doc["Id"]))
        chunks = c.logs(stream=True)
        assert not isinstance(chunks, bytes)
        assert list(chunks) == [b"one\n", b"two\n"]
        assert not is_running(ContainerStore(store).get(str(doc["Id"])))
