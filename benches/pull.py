"""Pull from a local registry: kobako against docker, podman and skopeo + umoci, interleaved.

A CNCF distribution registry (Debian's ``docker-registry``) started by the bench on
127.0.0.1 serves three images, pushed to it with ``skopeo copy`` from OCI layouts the bench
writes itself (layers ``gzip -6``):

* ``busybox``: the root filesystem of ``kobako.fixtures.busybox_rootfs`` (one layer, ~1 MB);
* ``debian``: the Debian bookworm minbase tar that ``benches/extract.py`` caches (one layer,
  60 MB gzip, 170 MB of tar);
* ``debian4``: the same files split in 4 layers of about equal (tar) size, to show what
  fetching and extracting layers in parallel gains.

Every measurement pulls one image into an empty store on a fresh journaled ext4 made for it
alone (``truncate``, ``mkfs.ext4``, ``mount -o loop``), for every tool alike. Rows:

* ``kobako CLI``: ``kobako --root DIR pull -q REF``, a fresh interpreter each time;
* ``kobako API``: ``kobako.Client(root=DIR).images.pull(REF)`` in this process;
* ``docker pull``: the Debian ``docker`` CLI against a ``dockerd`` started by the bench on the
  fresh file system (data root and exec root there; its own containerd; the registry listed
  as insecure; no bridge, no iptables). The daemon is started before the clock starts and
  stopped after it stops: only ``docker pull -q REF`` is timed;
* ``podman pull``: ``podman --root DIR --runroot DIR --tmpdir DIR pull -q`` (overlay);
* ``skopeo copy + umoci unpack``: into an OCI layout, then unpacked to a bundle;
* ``skopeo copy (blobs only)``: the download alone, for scale.

Each round pulls every image with every tool once, in a shuffled order, after untimed warm-up
rounds. Run as root (it installs what is missing from Debian)::

    python benches/pull.py                   # 5 rounds
    python benches/pull.py -n 3 --images busybox,debian --only "kobako CLI"
    python benches/pull.py --json samples.json

Only 127.0.0.1 is contacted. Everything the bench starts is stopped by its pid, and the bench
checks at the end that no process, mount, loop device, network interface or iptables rule of
its own is left (exit status 1 naming it otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from extract import DEFAULT_CACHE
from extract import prepare as prepare_debian

#: Every ratio is taken against this row.
BASELINE = "docker pull"
#: The targets of issue 4: image -> largest paired ratio of a kobako row to docker's.
TARGETS = {"debian": 0.6, "busybox": 1.0}
TARGET_ROWS = ("kobako CLI", "kobako API")
IMAGES = ("busybox", "debian", "debian4")
#: Program -> Debian package, installed when the program is missing.
PACKAGES = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "podman": "podman",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "docker-registry": "docker-registry",
    "mmdebstrap": "mmdebstrap",
    "zstd": "zstd",
    "mkfs.ext4": "e2fsprogs",
}
#: The services of the packages above: disabled after the bench installs them.
SERVICES = {
    "docker.io": ("docker.service", "docker.socket"),
    "containerd": ("containerd.service",),
    "docker-registry": ("docker-registry.service",),
}
SYSTEM_DAEMONS = ("dockerd", "containerd", "docker-registry")
#: The docker CLI of the docker.io package (the daemon's own version; a newer one may be first
#: on $PATH).
DOCKER = "/usr/bin/docker"
#: Where the peers keep state when not told otherwise; none of these may appear during a run.
DEFAULT_STATE = (
    "/var/lib/docker",
    "/run/docker",
    "/run/docker.sock",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/containers/storage",
    "/run/containers",
)


class BenchError(Exception):
    """A tool failed or the machine is not ready; printed as one line."""


def sh(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    """Run ``argv`` with no stdin/stdout; raise BenchError with its stderr on failure."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as e:
        raise BenchError(f"{argv[0]}: {e.strerror}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(
            f"{' '.join(argv)} exited {proc.returncode}: {err[-1] if err else '(no stderr)'}"
        )


def timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> float:
    """Run ``argv`` like :func:`sh` and return its wall time in seconds."""
    t0 = time.perf_counter()
    sh(argv, env=env)
    return time.perf_counter() - t0


def version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


# --- set-up: packages, host state ---------------------------------------------------------


def install_missing(packages: Mapping[str, str] = PACKAGES) -> None:
    """Install the missing peers from Debian, with no service allowed to start.

    ``packages`` maps a program to the Debian package that provides it; busybox-static and
    docker.io (for ``/usr/bin/docker``) are always checked.

    docker.io, containerd and docker-registry ship services; a ``policy-rc.d`` that answers
    101 keeps ``invoke-rc.d``/``deb-systemd-invoke`` from starting them (one is written for
    the install and removed after, unless the host already has one), and they are disabled
    after the install so that none starts at the next boot with its bridge and iptables
    rules. A daemon of theirs that started all the same is stopped by its pid.
    """
    missing = sorted({pkg for prog, pkg in packages.items() if shutil.which(prog) is None})
    status = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", "busybox-static"], capture_output=True, text=True
    ).stdout
    if "install ok installed" not in status:  # kobako.fixtures needs the static one
        missing.append("busybox-static")
    if not os.path.exists(DOCKER):
        missing.append("docker.io")
    missing = sorted(set(missing))
    if not missing:
        return
    print(f"installing {' '.join(missing)}", file=sys.stderr)
    daemons_before = set(daemon_pids())
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text(
            "#!/bin/sh\n# written by kobako's benches/pull.py for one install\nexit 101\n"
        )
        policy.chmod(0o755)
    try:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
        sh([*apt, "update", "-qq"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh([*apt, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    finally:
        if ours:
            policy.unlink()
    units = [unit for pkg in missing for unit in SERVICES.get(pkg, ())]
    if units:
        if os.path.isdir("/run/systemd/system"):  # systemd runs: it would restart them
            subprocess.run(["systemctl", "stop", *units], capture_output=True)
        subprocess.run(["systemctl", "disable", "--quiet", *units], capture_output=True)
    stop_pids([pid for pid in daemon_pids() if pid not in daemons_before])


def daemon_pids() -> list[int]:
    """Pids of running dockerd, containerd and docker-registry processes."""
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
            if entry.isdigit() and f.read().strip() in SYSTEM_DAEMONS:
                pids.append(int(entry))
    return pids


@dataclass(frozen=True)
class HostState:
    """What the peers could change on the host, to compare before and after the run."""

    iptables: str
    ip_forward: str
    links: frozenset[str]
    state_dirs: frozenset[str]

    @staticmethod
    def take() -> HostState:
        rules = []
        for prog in ("iptables-save", "ip6tables-save"):
            out = subprocess.run([prog], capture_output=True, text=True, check=False).stdout
            # comments carry the time, counters move with traffic
            rules += [
                re.sub(r"\[\d+:\d+\]", "", line)
                for line in out.splitlines()
                if not line.startswith("#")
            ]
        return HostState(
            iptables="\n".join(rules),
            ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
            links=frozenset(os.listdir("/sys/class/net")),
            state_dirs=frozenset(p for p in DEFAULT_STATE if os.path.lexists(p)),
        )

    def changes_since(self, before: HostState) -> list[str]:
        changes = []
        if self.iptables != before.iptables:
            changes.append("iptables rules changed")
        if self.ip_forward != before.ip_forward:
            changes.append(f"net.ipv4.ip_forward {before.ip_forward} -> {self.ip_forward}")
        changes += [f"network interface {n}" for n in sorted(self.links - before.links)]
        changes += [f"{p} appeared" for p in sorted(self.state_dirs - before.state_dirs)]
        return changes


# --- processes and mounts under the bench's directory --------------------------------------


def processes_under(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (ours: the path is unique)."""
    needle = str(path).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def stop_pids(pids: Sequence[int], timeout: float = 20.0) -> None:
    """SIGTERM each pid, wait for them to go, SIGKILL what is left after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def loops_under(path: Path) -> list[str]:
    """Loop devices backed by a file below ``path``."""
    found = []
    for dev in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            if (dev / "loop/backing_file").read_text().strip().startswith(str(path) + "/"):
                found.append(f"/dev/{dev.name}")
    return found


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        for attempt in range(20):
            if subprocess.run(["umount", point], capture_output=True).returncode == 0:
                break
            time.sleep(0.1 * (attempt + 1))
        else:
            raise BenchError(f"cannot unmount {point}")


class Scratch:
    """A fresh journaled ext4 on a loop file, mounted at ``base/mnt``, for one measurement.

    ``noinit_itable`` keeps ext4's lazy inode-table initialisation from writing in the
    background during the measurement. On exit, any process still running from it is
    stopped, everything mounted below it is unmounted, and the image is deleted and synced.
    """

    def __init__(self, base: Path) -> None:
        self.image = base / "fs.img"
        self.mnt = base / "mnt"

    def __enter__(self) -> Path:
        self.mnt.mkdir(exist_ok=True)
        sh(["truncate", "-s", "6G", str(self.image)])
        sh(["mkfs.ext4", "-F", "-q", str(self.image)])
        sh(["mount", "-o", "loop,noinit_itable", str(self.image), str(self.mnt)])
        (self.mnt / "tmp").mkdir()
        self.used0 = self.used()
        return self.mnt

    def used(self) -> int:
        """Bytes in use on the file system (ext4 counts delayed allocations)."""
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def __exit__(self, *exc: object) -> None:
        stop_pids(processes_under(self.mnt))
        unmount_all(self.mnt)
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()
        sh(["sync"])


# --- images: OCI layouts, the registry ------------------------------------------------------


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _gzip(tar: Path) -> Path:
    gz = tar.with_name(tar.name + ".gz")
    if not gz.exists():
        sh(["sh", "-c", f"gzip -6 -n -c '{tar}' > '{gz}.tmp' && mv '{gz}.tmp' '{gz}'"])
    return gz


def split_tar(src: Path, dest: Path, parts: int) -> list[Path]:
    """Split the tar ``src`` into ``parts`` tars of about equal size, in member order.

    Each part also holds the directory entries of its members' parents that an earlier part
    holds (the same metadata again), and a hard link goes with its target, so that each part
    can be extracted on its own, as a layer is.
    """
    with tarfile.open(src) as tar:
        members = tar.getmembers()
        total = sum(m.size for m in members) + 512 * len(members)
        chunks: list[list[tarfile.TarInfo]] = [[] for _ in range(parts)]
        where: dict[str, int] = {}
        done = 0
        for m in members:
            k = min(parts - 1, done * parts // total)
            if m.islnk():
                k = where.get(m.linkname, k)
            chunks[k].append(m)
            where[m.name] = k
            done += m.size + 512
        dirs = {m.name.rstrip("/"): m for m in members if m.isdir()}
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, chunk in enumerate(chunks):
            have = {m.name.rstrip("/") for m in chunk}
            parents: dict[str, tarfile.TarInfo] = {}
            for m in chunk:
                parent = os.path.dirname(m.name.rstrip("/"))
                while parent not in ("", ".") and parent not in have:
                    if parent in dirs:
                        parents[parent] = dirs[parent]
                    parent = os.path.dirname(parent)
            path = dest / f"layer{k}.tar"
            with tarfile.open(f"{path}.tmp", "w", format=tarfile.GNU_FORMAT) as out:
                for m in sorted(parents.values(), key=lambda d: d.name.count("/")):
                    out.addfile(m)
                for m in chunk:
                    out.addfile(m, tar.extractfile(m) if m.isreg() else None)
            os.rename(f"{path}.tmp", path)
            paths.append(path)
    return paths


def debian4_layers(cache: Path, rootfs: Path) -> list[tuple[Path, Path]]:
    """The cached 4-layer split of the Debian tar: (tar, gzip) per layer; made when missing."""
    dest = cache / "bookworm-minbase-4"
    tars = [dest / f"layer{k}.tar" for k in range(4)]
    if not all(t.exists() for t in tars):
        print("splitting the Debian tar in 4 layers", file=sys.stderr)
        tars = split_tar(rootfs, dest, 4)
    return [(t, _gzip(t)) for t in tars]


def busybox_layer(work: Path) -> tuple[Path, Path]:
    """A one-layer busybox root filesystem: (tar, gzip)."""
    from kobako.fixtures import busybox_rootfs

    root = busybox_rootfs(work / "busybox-rootfs")
    tar = work / "busybox.tar"
    sh(["tar", "-C", str(root), "--sort=name", "--numeric-owner", "-cf", str(tar), "."])
    return tar, _gzip(tar)


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_layout(layout: Path, layers: Sequence[tuple[Path, Path]]) -> None:
    """Write an OCI image layout holding one image (tag ``bench``) of ``layers``.

    The layer blobs are hard links to (or copies of) the given gzip files.
    """
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest, len(data)

    descriptors, diff_ids = [], []
    for tar, gz in layers:
        digest = _sha256_file(gz)
        target = blobs / digest.removeprefix("sha256:")
        try:
            os.link(gz, target)
        except OSError:
            shutil.copyfile(gz, target)
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": gz.stat().st_size,
            }
        )
        diff_ids.append(_sha256_file(tar))
    created = "2026-11-28T00:00:00Z"
    config = {
        "created": created,
        "architecture": _architecture(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": f"kobako benches/pull.py: layer {k}"}
            for k in range(len(layers))
        ],
    }
    config_digest, config_size = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": descriptors,
    }
    manifest_digest, manifest_size = put(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "bench"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(connect: Callable[[], http.client.HTTPConnection], path: str, what: str) -> None:
    """Poll ``GET path`` until it answers 200 (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        conn = connect()
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not answer {path} within 30 s")
        time.sleep(0.02)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.unix_path)


class Daemon:
    """A process of ours in its own session (Ctrl-C at the terminal does not reach it)."""

    def __init__(self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None):
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(
                f"{self.argv[0]} exited {self.proc.returncode}: {' / '.join(tail) or '(no log)'}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(base: Path) -> tuple[Daemon, str]:
    """Start ``docker-registry`` on 127.0.0.1 with its storage in ``base/registry``."""
    port = free_port()
    config = base / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    daemon = Daemon(["docker-registry", "serve", str(config)], base / "registry.log")
    try:
        wait_http(
            lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5), "/v2/", "the registry"
        )
    except BenchError:
        daemon.check()
        raise
    return daemon, f"127.0.0.1:{port}"


def push_images(
    base: Path, cache: Path, host: str, wanted: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Build the wanted images and push them as ``HOST/bench/NAME:latest``; returns sizes (MB)."""
    files = prepare_debian(cache)
    layers: dict[str, list[tuple[Path, Path]]] = {}
    if "busybox" in wanted:
        layers["busybox"] = [busybox_layer(base)]
    if "debian" in wanted:
        layers["debian"] = [(files["tar"], files["gzip"])]
    if "debian4" in wanted:
        layers["debian4"] = debian4_layers(cache, files["tar"])
    sizes = {}
    for name, image_layers in layers.items():
        layout = base / "oci" / name
        write_layout(layout, image_layers)
        sh(
            [
                "skopeo",
                "copy",
                "-q",
                "--dest-tls-verify=false",
                f"oci:{layout}:bench",
                f"docker://{host}/bench/{name}:latest",
            ]
        )
        sizes[name] = {
            "layers": len(image_layers),
            "tar_mb": sum(t.stat().st_size for t, _ in image_layers) / 1e6,
            "gzip_mb": sum(g.stat().st_size for _, g in image_layers) / 1e6,
        }
    shutil.rmtree(base / "oci")
    return sizes


# --- the tools --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One way to pull: ``pull(fs, ref)`` pulls ``ref`` into a store on ``fs``; returns seconds."""

    name: str
    pull: Callable[[Path, str], float]
    #: Whether it leaves the image's files on disk (else at least its compressed blobs).
    unpacks: bool = True


def python_env(pycache: Path) -> dict[str, str]:
    """A new interpreter's environment: bytecode cached, as after ``pip install``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def make_tools(base: Path, host: str) -> list[Tool]:
    daemon_json = base / "daemon.json"
    daemon_json.write_text(
        json.dumps(
            {
                "insecure-registries": [host],
                "bridge": "none",
                "iptables": False,
                "ip6tables": False,
                "ip-forward": False,
                "ip-masq": False,
            }
        )
    )
    py_env = python_env(base / "pycache")

    def env_for(fs: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
        # big temporary files (podman's, skopeo's blobs) go to the fresh file system too
        return dict(env or os.environ, TMPDIR=str(fs / "tmp"))

    def kobako_cli(fs: Path, ref: str) -> float:
        cli = Path(sys.executable).parent / "kobako"
        return timed(
            [str(cli), "--root", str(fs / "kobako"), "pull", "-q", ref], env=env_for(fs, py_env)
        )

    def kobako_api(fs: Path, ref: str) -> float:
        import kobako

        t0 = time.perf_counter()
        with kobako.Client(root=str(fs / "kobako")) as client:
            client.images.pull(ref)
        return time.perf_counter() - t0

    def docker(fs: Path, ref: str) -> float:
        d = fs / "docker"
        sock = d / "docker.sock"
        daemon = Daemon(
            [
                "dockerd",
                "--config-file",
                str(daemon_json),
                "--data-root",
                str(d / "data"),
                "--exec-root",
                str(d / "exec"),
                "--pidfile",
                str(d / "docker.pid"),
                "-H",
                f"unix://{sock}",
            ],
            base / "dockerd.log",
            env=env_for(fs),
        )
        try:
            try:
                wait_http(lambda: UnixHTTPConnection(str(sock)), "/_ping", "dockerd")
            except BenchError:
                daemon.check()
                raise
            check_own_containerd(daemon.proc.pid, d / "exec")
            return timed([DOCKER, "-H", f"unix://{sock}", "pull", "-q", ref])
        finally:
            daemon.stop()

    def podman(fs: Path, ref: str) -> float:
        p = fs / "podman"
        argv = ["podman", "--root", str(p / "root"), "--runroot", str(p / "run")]
        argv += ["--tmpdir", str(p / "tmp"), "--storage-driver", "overlay"]
        argv += ["--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        return timed([*argv, "pull", "-q", "--tls-verify=false", ref], env=env_for(fs))

    def skopeo_argv(fs: Path, ref: str) -> list[str]:
        return [
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"oci:{fs / 'layout'}:bench",
        ]

    def skopeo_umoci(fs: Path, ref: str) -> float:
        t0 = time.perf_counter()
        sh(skopeo_argv(fs, ref), env=env_for(fs))
        sh(["umoci", "unpack", "--image", f"{fs / 'layout'}:bench", str(fs / "bundle")])
        return time.perf_counter() - t0

    def skopeo_only(fs: Path, ref: str) -> float:
        return timed(skopeo_argv(fs, ref), env=env_for(fs))

    return [
        Tool("kobako CLI", kobako_cli),
        Tool("kobako API", kobako_api),
        Tool("docker pull", docker),
        Tool("podman pull", podman),
        Tool("skopeo copy + umoci unpack", skopeo_umoci),
        Tool("skopeo copy (blobs only)", skopeo_only, unpacks=False),
    ]


def check_own_containerd(dockerd: int, exec_root: Path) -> None:
    """Fail unless dockerd runs its own containerd (under its exec root), not the host's."""
    if not any(_parent(pid) == dockerd for pid in processes_under(exec_root / "containerd")):
        raise BenchError(
            "dockerd did not start its own containerd (is a system containerd running at "
            "/run/containerd/containerd.sock?): stop it first"
        )


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


# --- rounds and the report -----------------------------------------------------------------


def run_rounds(
    tools: list[Tool],
    images: Sequence[str],
    host: str,
    base: Path,
    sizes: Mapping[str, Mapping[str, float]],
    rounds: int,
    warmup: int,
    rng: random.Random,
) -> tuple[dict[str, dict[str, list[float]]], list[list[str]]]:
    """Run every (image, tool) once per round in a shuffled order; warm-up rounds untimed.

    After each pull (untimed), the bytes it wrote must reach 90% of the image's tar size
    (of its gzip size for a tool that does not unpack), so that a pull that silently did
    less than its job cannot pass for a fast one.

    Returns:
        The samples (s) per image and tool, index = round; the order of each timed round.
    """
    samples: dict[str, dict[str, list[float]]] = {i: {t.name: [] for t in tools} for i in images}
    orders: list[list[str]] = []
    pairs = [(image, tool) for image in images for tool in tools]
    for r in range(warmup + rounds):
        rng.shuffle(pairs)
        for image, tool in pairs:
            scratch = Scratch(base)
            with scratch as fs:
                t = tool.pull(fs, f"{host}/bench/{image}:latest")
                written = scratch.used() - scratch.used0
            least = sizes[image]["tar_mb" if tool.unpacks else "gzip_mb"] * 0.9e6
            if written < least:
                raise BenchError(
                    f"{tool.name} wrote {written / 1e6:.1f} MB for {image}: "
                    f"expected at least {least / 1e6:.1f} MB"
                )
            if r >= warmup:
                samples[image][tool.name].append(t)
        if r >= warmup:
            orders.append([f"{image} {tool.name}" for image, tool in pairs])
        label = "warm-up round" if r < warmup else "round"
        n = r + 1 if r < warmup else r + 1 - warmup
        print(f"  {label} {n}/{warmup if r < warmup else rounds} done", file=sys.stderr)
    return samples, orders


def paired(xs: Sequence[float], base: Sequence[float]) -> float:
    """The median over rounds of the ratio within each round."""
    return statistics.median(x / b for x, b in zip(xs, base, strict=True))


def report(
    samples: dict[str, dict[str, list[float]]], sizes: dict[str, dict[str, float]]
) -> tuple[str, bool]:
    """The tables (markdown) and the target lines; also whether every target checked was met."""
    lines: list[str] = []
    met = True
    for image, rows in samples.items():
        s = sizes[image]
        lines.append(
            f"{image}: {s['layers']:.0f} layer(s), {s['gzip_mb']:.1f} MB gzip, "
            f"{s['tar_mb']:.1f} MB tar\n"
        )
        base = rows.get(BASELINE)
        lines.append(f"| tool | median s | vs {BASELINE} | paired vs {BASELINE} |")
        lines.append("|---|---:|---:|---:|")
        for name, xs in rows.items():
            m = statistics.median(xs)
            if base:
                cells = f"{m / statistics.median(base):.2f}x | {paired(xs, base):.2f}x"
            else:
                cells = "- | -"
            lines.append(f"| {name} | {m:.3f} | {cells} |")
        lines.append("")
        if image in TARGETS and base:
            limit = TARGETS[image]
            for name in TARGET_ROWS:
                if name in rows:
                    p = paired(rows[name], base)
                    ratio = statistics.median(rows[name]) / statistics.median(base)
                    ok = p <= limit
                    met &= ok
                    lines.append(
                        f"target {image}: {name} <= {limit}x {BASELINE}: paired {p:.2f}x "
                        f"(medians {ratio:.2f}x) {'met' if ok else 'MISSED'}"
                    )
            lines.append("")
    if "debian" in samples and "debian4" in samples:
        lines.append("parallel layers: debian4 (4 layers) / debian (1 layer), paired by round")
        for name in samples["debian"]:
            p = paired(samples["debian4"][name], samples["debian"][name])
            lines.append(f"  {name}: {p:.2f}x")
        lines.append("")
    return "\n".join(lines), met


def leftovers(base: Path, before: HostState) -> list[str]:
    """What the run left behind (each also stopped or unmounted on the way, if it can be)."""
    left = []
    pids = processes_under(base)
    if pids:
        left += [f"process {pid}" for pid in pids]
        stop_pids(pids, timeout=10)
    mounts = mounts_under(base)
    if mounts:
        left += [f"mount {m}" for m in mounts]
        with contextlib.suppress(BenchError):
            unmount_all(base)
    left += [f"loop device {d}" for d in loops_under(base)]
    # dockerd makes /run/docker/plugins whatever its exec root: removed if it is still empty
    for path in HostState.take().state_dirs - before.state_dirs:
        remove_empty_tree(Path(path))
    left += HostState.take().changes_since(before)
    return left


def remove_empty_tree(path: Path) -> None:
    """Remove ``path`` if it is a tree of empty directories; leave it otherwise."""
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        remove_empty_tree(child)
    with contextlib.suppress(OSError):
        path.rmdir()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("-n", "--rounds", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the round orders")
    p.add_argument("--only", help=f"comma-separated rows to run ({BASELINE!r} is added)")
    p.add_argument(
        "--images", default=",".join(IMAGES), help="comma-separated, of " + ",".join(IMAGES)
    )
    p.add_argument(
        "--cache", type=Path, default=os.environ.get("KOBAKO_BENCH_CACHE", DEFAULT_CACHE)
    )
    p.add_argument("--json", metavar="FILE", type=Path, help="save the raw samples (s) here")
    args = p.parse_args(argv)
    args.images = args.images.split(",")
    if unknown := set(args.images) - set(IMAGES):
        p.error(f"unknown image {sorted(unknown)[0]!r}: choose among {', '.join(IMAGES)}")
    if args.rounds < 1 or args.warmup < 0:
        p.error("--rounds must be at least 1 and --warmup at least 0")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if os.geteuid() != 0:
        print("pull.py: run as root (loop mounts, dockerd, package installs)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    status = 0
    try:
        install_missing()
    except BenchError as e:
        print(f"pull.py: {e}", file=sys.stderr)
        return 1
    before = HostState.take()
    base = Path(tempfile.mkdtemp(prefix="kobako-bench-pull-"))
    registry: Daemon | None = None
    try:
        registry, host = start_registry(base)
        sizes = push_images(base, args.cache, host, args.images)
        tools = make_tools(base, host)
        if args.only:
            wanted = set(args.only.split(",")) | {BASELINE}
            if unknown := wanted - {t.name for t in tools}:
                raise BenchError(f"unknown row {sorted(unknown)[0]!r}")
            tools = [t for t in tools if t.name in wanted]
        from kobako import __version__

        meta = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "kobako": __version__,
            "dockerd": version(["dockerd", "--version"]),
            "podman": version(["podman", "--version"]),
            "skopeo": version(["skopeo", "--version"]),
            "umoci": version(["umoci", "--version"]),
            "registry": version(["docker-registry", "--version"]),
            "rounds": args.rounds,
            "warmup": args.warmup,
            "seed": args.seed,
            "images": sizes,
            "loadavg_before": os.getloadavg()[0],
        }
        print(
            f"{args.rounds} rounds (+{args.warmup} warm-up), seed {args.seed}, registry {host}, "
            f"{meta['dockerd']}, {meta['podman']}, load {meta['loadavg_before']:.2f}",
            file=sys.stderr,
        )
        samples, orders = run_rounds(
            tools,
            args.images,
            host,
            base,
            sizes,
            args.rounds,
            args.warmup,
            random.Random(args.seed),
        )
        meta["loadavg_after"] = os.getloadavg()[0]
        text, met = report(samples, sizes)
        print(
            f"\n{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
            f"{args.rounds} rounds (seed {args.seed}), load {meta['loadavg_before']:.2f} "
            f"before, {meta['loadavg_after']:.2f} after\n"
        )
        print(text)
        status = 0 if met else 1
        if args.json:
            args.json.write_text(
                json.dumps({"meta": meta, "samples_s": samples, "orders": orders}, indent=1)
            )
    except BenchError as e:
        print(f"pull.py: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("pull.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if registry is not None:
            registry.stop()
        left = leftovers(base, before)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print("pull.py: left behind: " + ", ".join(left), file=sys.stderr)
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
