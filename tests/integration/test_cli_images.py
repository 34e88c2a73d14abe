"""The image verbs of the CLI, driven for real: images, history, tag, rmi, prune, df, archives.

Images are built straight into a per-test store (layers made with Python's tarfile), the
CLI runs as a subprocess on that store, and what it prints is checked against what docker
prints; what it leaves in the store (blobs, extracted layers) is checked through the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from kobako.cli.fmt import (
    Template,
    ellipsis,
    human_duration,
    human_size,
    print_table,
    tabwrite,
    write_list,
)
from kobako.errors import InvalidArgument
from kobako.image.manifest import OCI_CONFIG, OCI_LAYER, Descriptor, canonical, manifest_json
from kobako.image.store import ImageRecord, Store
from kobako.runtime.containers import ContainerStore
from tests.conftest import KOBAKO
from tests.conftest import kobako as cli
from tests.imagetools import tar_of

IMAGE_KEYS = {
    "Containers",
    "CreatedAt",
    "CreatedSince",
    "Digest",
    "ID",
    "Repository",
    "SharedSize",
    "Size",
    "Tag",
    "UniqueSize",
    "VirtualSize",
}


def build(
    store: Store,
    files: dict[str, bytes],
    *,
    tags: tuple[str, ...] = (),
    history: list[dict[str, object]] | None = None,
    labels: dict[str, str] | None = None,
    created: str = "2020-01-01T00:00:00Z",
) -> ImageRecord:
    """A one-layer image of ``files`` (uncompressed layer), committed with ``tags``."""
    layer = tar_of([(name, "file", data, 0o644) for name, data in files.items()])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Cmd": ["sh"], "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": history or [{"created": created, "created_by": "kobako tests"}],
    }
    with store.stage() as stage:
        d = stage.add_blob(layer)
        stage.add_layer(d.digest, diff_id)
        c = stage.add_blob(canonical(config))
        m = stage.add_blob(
            manifest_json(
                Descriptor(digest=c.digest, size=c.size, media_type=OCI_CONFIG),
                [Descriptor(digest=d.digest, size=d.size, media_type=OCI_LAYER)],
            )
        )
        stage.commit(manifest_digest=m.digest, tags=list(tags))
    return store.image(m.digest)


def use(store: Store, image: ImageRecord) -> dict[str, object]:
    """A (created, never started) container record using ``image``."""
    return ContainerStore(store).create(
        image, "app:1", name=None, config={}, host_config={}, layers=[]
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The failed command's stderr, checked to be one ``kobako: ...`` line."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("kobako: "), r.stderr
    return r.stderr.strip()


def columns(line: str, header: str) -> list[str]:
    """Cut a table line at the header's column starts."""
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=   ))\S", header)]
    ends = [*starts[1:], None]
    return [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def blobs_of(image: ImageRecord) -> set[str]:
    return {image.manifest_digest, image.id, *(d.digest for d in image.manifest.layers)}


# -- images -------------------------------------------------------------------------------


def test_images_table(store: Store) -> None:
    app = build(store, {"hello": b"hi\n" * 1000}, tags=("app:1",))
    none = build(store, {"other": b"x"})
    r = cli("images")
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +IMAGE ID +CREATED +SIZE", header)
    assert header.index("TAG") == len("REPOSITORY") + 3  # docker's padding: 3
    rows = {cols[0]: cols for cols in (columns(line, header) for line in lines)}
    assert rows["app"][:3] == ["app", "1", app.id[7:19]]
    assert re.fullmatch(r"\d+ years ago", rows["app"][3])
    assert rows["app"][4] == "3kB"  # 3000 bytes, in docker's decimal units
    assert rows["<none>"][:3] == ["<none>", "<none>", none.id[7:19]]

    r = cli("images", "--no-trunc", "--digests")
    header, *lines = r.stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +DIGEST +IMAGE ID +CREATED +SIZE", header)
    app_row = next(columns(line, header) for line in lines if line.startswith("app"))
    assert app_row[2:4] == [app.manifest_digest, app.id]


def test_tag_shows_two_rows_and_quiet_lists_each_image_once(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    r = cli("tag", "app:1", "registry.example:5000/team/app:2")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = cli("images")
    header, *lines = r.stdout.splitlines()
    rows = sorted(columns(line, header)[:3] for line in lines)
    assert rows == [
        ["app", "1", app.id[7:19]],
        ["registry.example:5000/team/app", "2", app.id[7:19]],
    ]
    assert cli("images", "-q").stdout == app.id[7:19] + "\n"
    assert cli("images", "-qa", "--no-trunc").stdout == app.id + "\n"
    assert cli("tag", app.id[7:15], "app:latest").returncode == 0  # by ID prefix
    assert "docker.io/library/app:latest" in store.image(app.id).names


def test_images_format_json_and_templates(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1", "app:2"))
    build(store, {"b": b"b"})
    r = cli("images", "--format", "json")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(set(doc) == IMAGE_KEYS for doc in docs)
    named = sorted((d["Repository"], d["Tag"], d["ID"]) for d in docs if d["Tag"] != "<none>")
    assert named == [("app", "1", app.id[7:19]), ("app", "2", app.id[7:19])]
    assert "\\u003cnone\\u003e" in r.stdout  # Go's json escapes < and >
    assert all(d["Containers"] == "0" and d["Size"] == "1B" for d in docs)

    r = cli("images", "--format", "{{.Repository}}:{{.Tag}}", "app")
    assert r.stdout.splitlines() == ["app:1", "app:2"]
    r = cli("image", "ls", "--format", r"table {{.ID}}\t{{.Tag}}", "app:2")
    assert r.stdout == f"IMAGE ID       TAG\n{app.id[7:19]}   2\n"
    r = cli("images", "--format", "{{.Nope}}")
    assert "can't evaluate field Nope" in one_line_error(r)


def test_images_filters(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1", "tools/app:1"), labels={"team": "kobako"})
    none = build(store, {"b": b"b"})
    build(store, {"c": b"c"}, tags=("base:1",), created="2019-01-01T00:00:00Z")

    def ids(*args: str) -> list[str]:
        r = cli("images", "-q", *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert ids("-f", "dangling=true") == [none.id[7:19]]
    assert none.id[7:19] not in ids("--filter", "dangling=false")
    assert ids("-f", "reference=app") == [app.id[7:19]]
    assert ids("-f", "reference=*/app:1") == [app.id[7:19]]
    assert ids("-f", "reference=b*") != [app.id[7:19]] and len(ids("-f", "reference=b*")) == 1
    assert ids("-f", "label=team=kobako") == [app.id[7:19]]
    assert ids("-f", "label=team=other") == []
    assert app.id[7:19] in ids("-f", "since=base:1") and len(ids("-f", "before=app:1")) == 1
    r = cli("images", "--format", "{{.Repository}}", "-f", "reference=tools/*")
    assert r.stdout == "tools/app\n"  # only the names that match are listed
    assert "bad format of filter" in one_line_error(cli("images", "-f", "dangling"))
    assert "invalid filter 'color'" in one_line_error(cli("images", "-f", "color=red"))
    assert "dangling=maybe" in one_line_error(cli("images", "-f", "dangling=maybe"))


# -- inspect and history ------------------------------------------------------------------


def test_image_inspect(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    r = cli("image", "inspect", "app:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('[\n    {\n        "Id": ')
    (doc,) = json.loads(r.stdout)
    assert doc["Id"] == app.id and doc["RepoTags"] == ["app:1"]
    assert doc["RootFS"] == {"Type": "layers", "Layers": list(app.config.diff_ids)}
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Os"] == "linux" and doc["Size"] == 1
    r = cli("image", "inspect", "-f", "{{.Id}} {{.Config.Cmd}} {{json .RepoTags}}", app.id[7:19])
    assert r.stdout == f'{app.id} [sh] ["app:1"]\n'
    r = cli("image", "inspect", "app:1", "nope")
    assert r.returncode == 1 and len(json.loads(r.stdout)) == 1
    assert one_line_error(r) == "kobako: No such image: nope"


def test_history(store: Store) -> None:
    history: list[dict[str, object]] = [
        {"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in /"},
        {
            "created": "2020-01-02T00:00:00Z",
            "created_by": '/bin/sh -c #(nop)  CMD ["sh"]\twith a tab and a long tail to cut',
            "comment": "buildkit.dockerfile.v0",
            "empty_layer": True,
        },
    ]
    app = build(store, {"data": b"x" * 2048}, tags=("app:1",), history=history)
    r = cli("history", "app:1")
    assert r.returncode == 0, r.stderr
    header, top, bottom = r.stdout.splitlines()
    assert re.fullmatch(r"IMAGE +CREATED +CREATED BY +SIZE +COMMENT", header)
    top_cols, bottom_cols = columns(top, header), columns(bottom, header)
    assert top_cols[0] == app.id[7:19] and bottom_cols[0] == "<missing>"
    assert re.fullmatch(r"\d+ years ago", top_cols[1])
    assert top_cols[2] == '/bin/sh -c #(nop)  CMD ["sh"] with a tab and…'  # 45 wide
    assert top_cols[3:] == ["0B", "buildkit.dockerfile.v0"]
    assert bottom_cols[2:] == ["/bin/sh -c #(nop) ADD file:abc in /", "2.05kB", ""]

    assert cli("history", "-q", "app:1").stdout == f"{app.id[7:19]}\n<missing>\n"
    r = cli("image", "history", "--no-trunc", "-H=false", "app:1")
    header, top, bottom = r.stdout.splitlines()
    assert re.fullmatch(r"IMAGE +CREATED AT +CREATED BY +SIZE +COMMENT", header)
    assert top.startswith(app.id) and "with a tab and a long tail to cut" in top
    assert bottom.split()[-1] == "2048" and "2020-01-01T" in bottom
    r = cli("history", "--format", "json", "app:1")
    assert [json.loads(line)["Size"] for line in r.stdout.splitlines()] == ["0B", "2.05kB"]
    assert one_line_error(cli("history", "nope")) == "kobako: No such image: nope"


# -- tag and rmi --------------------------------------------------------------------------


def test_rmi_untags_then_deletes_and_collects(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1", "app:2"))
    keep = build(store, {"k": b"k"}, tags=("keep:1",))
    r = cli("rmi", "app:2")
    assert (r.returncode, r.stdout) == (0, "Untagged: app:2\n")
    assert store.image(app.id).names == ("docker.io/library/app:1",)
    r = cli("image", "rm", "app:1")
    assert (r.returncode, r.stdout) == (0, f"Untagged: app:1\nDeleted: {app.id}\n")
    assert set(store.blobs()) == blobs_of(keep)
    assert store.layers() == list(keep.config.diff_ids)
    assert [i.id for i in store.images()] == [keep.id]


def test_rmi_by_id(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1", "app:2"))
    r = cli("rmi", app.id[7:19])
    assert r.returncode == 1
    assert "image is referenced in multiple repositories" in one_line_error(r)
    r = cli("rmi", "-f", app.id[7:19])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Untagged: app:1\nUntagged: app:2\nDeleted: {app.id}\n"
    assert store.images() == [] and store.blobs() == [] and store.layers() == []


def test_rmi_refuses_an_image_a_container_uses(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    doc = use(store, app)
    r = cli("rmi", "app:1")
    assert r.returncode == 1
    assert one_line_error(r) == (
        'kobako: conflict: unable to remove repository reference "app:1" (must force) - '
        f"container {str(doc['Id'])[:12]} is using its referenced image {app.id[7:19]}"
    )
    assert store.image("app:1").id == app.id
    r = cli("rmi", "-f", "app:1")
    assert (r.returncode, r.stdout) == (0, "Untagged: app:1\n")
    kept = store.image(app.id)  # unnamed now, kept for its container
    assert kept.names == () and blobs_of(app) <= set(store.blobs())
    assert cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "<none>:<none>\n"
    # nothing prunes it while the container lives
    r = cli("image", "prune", "-f")
    assert r.stdout == "Total reclaimed space: 0B\n"
    assert store.image(app.id).id == app.id


def test_rmi_carries_on_and_fails_with_1(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    r = cli("rmi", "nope", "app:1")
    assert r.returncode == 1
    assert r.stderr == "kobako: No such image: nope\n"
    assert r.stdout == f"Untagged: app:1\nDeleted: {app.id}\n"
    r = cli("rmi", "-f", "nope")  # docker: a missing image is not an error with --force
    assert (r.returncode, r.stderr) == (0, "kobako: No such image: nope\n")


# -- prune and df -------------------------------------------------------------------------


def test_image_prune(store: Store) -> None:
    named = build(store, {"a": b"a" * 100}, tags=("app:1",))
    dangling = build(store, {"b": b"b" * 100})
    r = cli("image", "prune", "-f")
    assert r.returncode == 0, r.stderr
    deleted, total = r.stdout.split("\n\n")
    assert deleted == f"Deleted Images:\ndeleted: {dangling.id}"
    assert re.fullmatch(r"Total reclaimed space: \d+(\.\d+)?k?B\n", total)
    assert set(store.blobs()) == blobs_of(named)
    assert store.layers() == list(named.config.diff_ids)

    r = cli("image", "prune", "-a", "-f")
    assert r.stdout.startswith(f"Deleted Images:\nuntagged: app:1\ndeleted: {named.id}\n\n")
    assert store.images() == [] and store.blobs() == [] and store.layers() == []


def test_prune_asks_first(store: Store) -> None:
    build(store, {"b": b"b"})
    r = cli("image", "prune", input=b"n\n")
    assert r.returncode == 0
    assert r.stdout == (
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    )
    assert len(store.images()) == 1
    r = cli("image", "prune", input=b"y\n")
    assert "Deleted Images:" in r.stdout and store.images() == []


def test_system_prune(store: Store) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    dangling = build(store, {"b": b"b"})
    doc = use(store, app)
    freed = sum(os.stat(store.blob_path(d)).st_size for d in blobs_of(dangling)) + 1
    r = cli("system", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"Deleted Containers:\n{doc['Id']}\n\n"
        f"Deleted Images:\ndeleted: {dangling.id}\n\n"
        f"Total reclaimed space: {human_size(freed)}\n"
    )
    assert ContainerStore(store).list() == []
    assert [i.id for i in store.images()] == [app.id]  # named: kept without -a
    assert set(store.blobs()) == blobs_of(app)
    r = cli("system", "prune", "-a", "-f")
    assert f"untagged: app:1\ndeleted: {app.id}" in r.stdout
    assert store.blobs() == [] and store.layers() == [] and store.leases() == {}


def test_system_df(store: Store) -> None:
    app = build(store, {"a": b"a" * 5000}, tags=("app:1",))
    build(store, {"b": b"b" * 5000})
    use(store, app)
    r = cli("system", "df")
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert re.fullmatch(r"TYPE +TOTAL +ACTIVE +SIZE +RECLAIMABLE", header)
    rows = {line[: header.index("TOTAL")].strip(): line for line in lines}
    assert list(rows) == ["Images", "Containers", "Local Volumes", "Build Cache"]
    images = columns(rows["Images"], header)
    blob_bytes = sum(os.stat(store.blob_path(d)).st_size for d in store.blobs())
    assert images[1:3] == ["2", "1"]
    assert images[3] == human_size(blob_bytes + 10_000)
    pinned = sum(os.stat(store.blob_path(d)).st_size for d in blobs_of(app)) + 5000
    reclaim = blob_bytes + 10_000 - pinned
    assert images[4] == f"{human_size(reclaim)} ({reclaim * 100 // (blob_bytes + 10_000)}%)"
    assert columns(rows["Containers"], header)[1:] == ["1", "0", "0B", "0B"]
    assert columns(rows["Local Volumes"], header)[1:] == ["0", "0", "0B", "0B"]
    assert columns(rows["Build Cache"], header)[1:] == ["0", "0", "0B", "0B"]

    r = cli("system", "df", "-v")
    assert r.returncode == 0, r.stderr
    for section in (
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "Build cache usage: 0B",
    ):
        assert section in r.stdout
    assert re.search(r"^app +1 +" + app.id[7:19] + r" .* 5kB +0B +5kB +1$", r.stdout, re.M)
    r = cli("system", "df", "--format", "{{.Type}}={{.TotalCount}}")
    assert r.stdout.splitlines() == ["Images=2", "Containers=1", "Local Volumes=0", "Build Cache=0"]


# -- errors ---------------------------------------------------------------------------------


def test_errors_are_one_line(store: Store, tmp_path: Path) -> None:
    build(store, {"a": b"a"}, tags=("app:1",))
    assert "invalid reference format" in one_line_error(cli("tag", "a", "INVALID::x"))
    assert one_line_error(cli("tag", "nope", "b:1")) == "kobako: No such image: nope"
    assert "requires exactly 2 arguments" in one_line_error(cli("tag", "app:1"))
    assert one_line_error(cli("rmi", "nope")) == "kobako: No such image: nope"
    missing = str(tmp_path / "missing.tar")
    r = cli("load", "-i", missing)
    assert one_line_error(r) == f"kobako: open {missing}: no such file or directory"
    assert "is not a kobako command" in one_line_error(cli("image", "bogus"))
    assert "unknown flag" in one_line_error(cli("images", "--bogus"))
    assert "is not a kobako command" in one_line_error(cli("system", "bogus"))
    assert "template parsing error" in one_line_error(cli("images", "--format", "{{.ID"))


def test_root_flag_picks_the_store(tmp_path: Path) -> None:
    other = Store.open(str(tmp_path / "other"))
    app = build(other, {"a": b"a"}, tags=("app:1",))
    r = cli("--root", other.root, "images", "-q")
    assert r.stdout == app.id[7:19] + "\n"


# -- archives -------------------------------------------------------------------------------


@pytest.fixture
def archive() -> object:
    return pytest.importorskip("kobako.image.archive")


def test_save_then_load(store: Store, tmp_path: Path, archive: object) -> None:
    app = build(store, {"a": b"a"}, tags=("app:1",))
    out = tmp_path / "app.tar"
    r = cli("save", "-o", str(out), "app:1")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0
    assert cli("rmi", "app:1").returncode == 0
    r = cli("load", "-i", str(out))
    assert (r.returncode, r.stdout) == (0, "Loaded image: app:1\n"), r.stderr
    assert store.image("app:1").id == app.id
    with open(out, "rb") as f:  # from stdin, quietly: the same lines (docker's -q)
        r2 = subprocess.run([KOBAKO, "load", "-q"], stdin=f, capture_output=True, text=True)
    assert (r2.returncode, r2.stdout) == (0, "Loaded image: app:1\n"), r2.stderr

    r = cli("save", "app:1", "nope", "-o", str(tmp_path / "bad.tar"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*bad.tar*"))


def test_save_refuses_a_terminal(store: Store, archive: object) -> None:
    build(store, {"a": b"a"}, tags=("app:1",))
    primary, secondary = os.openpty()
    try:
        r = subprocess.run(
            [KOBAKO, "save", "app:1"], stdout=secondary, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert r.returncode != 0
    assert r.stderr == (
        "kobako: cowardly refusing to save to a terminal. Use the -o flag or redirect\n"
    )


def test_import(store: Store, tmp_path: Path, archive: object) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(tar_of([("etc", "dir", b"", 0o755), ("etc/motd", "file", b"hi\n", 0o644)]))
    r = cli("import", "-m", "from tests", "-c", 'CMD ["/bin/sh"]', str(rootfs), "imported:1")
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    record = store.image("imported:1")
    assert record.id == image_id and record.config.cmd == ("/bin/sh",)
    with open(rootfs, "rb") as f:
        r2 = subprocess.run([KOBAKO, "import", "-"], stdin=f, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert store.image(r2.stdout.strip()).names == ()
    assert "invalid reference format" in one_line_error(cli("import", str(rootfs), "BAD::x"))


# -- output helpers (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.45, "Less than a second"),
        (1, "1 second"),
        (47, "47 seconds"),
        (60, "About a minute"),
        (35 * 60 + 40, "35 minutes"),
        (3600 + 29 * 60, "About an hour"),
        (3600 + 31 * 60, "2 hours"),
        (36 * 3600, "36 hours"),
        (13 * 86400 + 5 * 3600, "13 days"),
        (30 * 86400, "4 weeks"),
        (60 * 86400, "2 months"),
        (24 * 30 * 86400, "24 months"),
        ((24 * 30 + 14) * 86400, "2 years"),
        ((3 * 365 + 60) * 86400, "3 years"),
    ],
)
def test_human_duration_is_go_units(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_size_is_go_units() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 10**18)] == [
        "0B",
        "999B",
        "1kB",
        "1.235MB",
        "1EB",
    ]
    assert human_size(4_261_000, 3) == "4.26MB" and human_size(1_200_000_000, 3) == "1.2GB"


def test_tabwriter_and_templates(capsys: pytest.CaptureFixture[str]) -> None:
    assert tabwrite("A\tBB\tC\nlonger cell\tx\ty\n") == (
        "A             BB        C\nlonger cell   x         y\n"
    )
    print_table(("ID", "NAME"), [("1", "a")])
    assert capsys.readouterr().out == "ID        NAME\n1         a\n"
    write_list(
        "table {{.A}}\t{{json .B}}",
        [{"A": "x", "B": ["<1>"]}],
        default="",
        headers={"A": "COL A", "B": "COL B"},
    )
    # the header row goes through the same template, as docker's does
    assert capsys.readouterr().out == 'COL A     "COL B"\nx         ["<1>"]\n'
    doc = {"Config": {"Cmd": ["sh", "-c"], "Env": None}, "Mounts": [{"S": "/a"}, {"S": "/b"}]}
    t = Template('{{.Config.Cmd}}|{{join .Config.Cmd " "}}|{{range .Mounts}}{{.S}},{{end}}|')
    assert t.render(doc) == "[sh -c]|sh -c|/a,/b,|"
    assert Template("{{if .Config.Env}}y{{else}}n{{end}} {{.Nope}}").render(doc) == "n <no value>"
    assert Template("{{- .A -}} \n {{.A | upper}}").render({"A": "q"}) == "qQ"
    assert ellipsis("abcdef", 4) == "abc…" and ellipsis("abc", 4) == "abc"
    for bad in ("{{.A", "{{nope .A}}", "{{if .A}}", "{{end}}", '{{"x}}'):
        with pytest.raises(InvalidArgument):
            Template(bad)
