"""``kobako run`` and ``kobako create``: a new container from an image (``docker run``'s flags).

``kobako run [OPTIONS] IMAGE [COMMAND] [ARG...]`` runs a container whose root filesystem is
an overlay of the image's layers and its own writable layer, honouring the image's config.
With ``--rootfs`` (podman's spelling) the image position holds a root filesystem directory
instead, used in place and kept nowhere: ``kobako run --rm --rootfs DIR CMD [ARG...]``.
"""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, INT, STRING, STRING_ARRAY, Command, Flag
from kobako.cli.main import fail
from kobako.errors import InvalidArgument
from kobako.runtime import parse
from kobako.runtime.spec import (
    IdMap,
    Namespaces,
    Network,
    Process,
    Resources,
    Security,
    Spec,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kobako.image.store import ImageRecord, Store
    from kobako.runtime.lifecycle import Exit

#: ``docker run``'s flags that kobako has, with docker's value names in ``--help``.
FLAGS = (
    Flag("rootfs", "", BOOL, "The first argument is a root filesystem directory"),
    Flag("interactive", "i", BOOL, "Keep STDIN open"),
    Flag("tty", "t", BOOL, "Allocate a pseudo-TTY"),
    Flag("detach", "d", BOOL, "Run container in background"),
    Flag("detach-keys", "", STRING, "Override the key sequence for detaching a container"),
    Flag("rm", "", BOOL, "Automatically remove the container when it exits"),
    Flag("restart", "", STRING, "Restart policy to apply when a container exits", default="no"),
    Flag("name", "", STRING, "Assign a name to the container"),
    Flag("label", "l", STRING_ARRAY, "Set meta data on a container", varname="list"),
    Flag("env", "e", STRING_ARRAY, "Set environment variables", varname="list"),
    Flag("env-file", "", STRING_ARRAY, "Read in a file of environment variables", varname="list"),
    Flag("workdir", "w", STRING, "Working directory inside the container"),
    Flag("user", "u", STRING, "Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag("hostname", "h", STRING, "Container host name"),
    Flag("volume", "v", STRING_ARRAY, "Bind mount a volume", varname="list"),
    Flag("mount", "", STRING_ARRAY, "Attach a filesystem mount to the container", varname="mount"),
    Flag(
        "volumes-from",
        "",
        STRING_ARRAY,
        "Mount volumes from the specified container(s)",
        varname="list",
    ),
    Flag("tmpfs", "", STRING_ARRAY, "Mount a tmpfs directory", varname="list"),
    Flag("read-only", "", BOOL, "Mount the container's root filesystem as read only"),
    Flag("privileged", "", BOOL, "Give extended privileges to this container"),
    Flag("cap-add", "", STRING_ARRAY, "Add Linux capabilities", varname="list"),
    Flag("cap-drop", "", STRING_ARRAY, "Drop Linux capabilities", varname="list"),
    Flag("security-opt", "", STRING_ARRAY, "Security Options", varname="list"),
    Flag("ulimit", "", STRING_ARRAY, "Ulimit options", varname="ulimit"),
    Flag("init", "", BOOL, "Run an init inside the container"),
    Flag(
        "network",
        "",
        STRING,
        "Connect a container to a network",
        default="bridge",
        varname="network",
        aliases=("net",),
    ),
    Flag(
        "network-alias",
        "",
        STRING_ARRAY,
        "Add network-scoped alias for the container",
        varname="list",
        aliases=("net-alias",),
    ),
    Flag("ip", "", STRING, "IPv4 address (e.g., 172.30.100.104)"),
    Flag("publish", "p", STRING_ARRAY, "Publish a container's port(s) to the host", varname="list"),
    Flag("publish-all", "P", BOOL, "Publish all exposed ports to random ports"),
    Flag("expose", "", STRING_ARRAY, "Expose a port or a range of ports", varname="list"),
    Flag("add-host", "", STRING_ARRAY, "Add a custom host-to-IP mapping (host:ip)", varname="list"),
    Flag("dns", "", STRING_ARRAY, "Set custom DNS servers", varname="list"),
    Flag("dns-search", "", STRING_ARRAY, "Set custom DNS search domains", varname="list"),
    Flag("dns-option", "", STRING_ARRAY, "Set DNS options", varname="list"),
    Flag("entrypoint", "", STRING, "Overwrite the default ENTRYPOINT of the image"),
    Flag(
        "pull",
        "",
        STRING,
        'Pull image before running ("always", "missing", "never")',
        default="missing",
    ),
    Flag("platform", "", STRING, "Set platform if server is multi-platform capable"),
    Flag("memory", "m", STRING, "Memory limit", varname="bytes"),
    Flag(
        "memory-swap",
        "",
        STRING,
        "Swap limit equal to memory plus swap: '-1' to enable unlimited swap",
        varname="bytes",
    ),
    Flag("memory-reservation", "", STRING, "Memory soft limit", varname="bytes"),
    Flag("cpus", "", STRING, "Number of CPUs", varname="decimal"),
    Flag("cpu-shares", "c", INT, "CPU shares (relative weight)"),
    Flag("cpuset-cpus", "", STRING, "CPUs in which to allow execution (0-3, 0,1)"),
    Flag("pids-limit", "", INT, "Tune container pids limit (set -1 for unlimited)"),
    Flag("uidmap", "", STRING_ARRAY, "User namespace uid map CONTAINER:HOST:SIZE", varname="list"),
    Flag("gidmap", "", STRING_ARRAY, "User namespace gid map CONTAINER:HOST:SIZE", varname="list"),
)

COMMAND = Command(
    "kobako run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Run a command in a new container",
    FLAGS,
    interspersed=False,
)
CREATE = Command(
    "kobako create [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create a new container",
    tuple(f for f in FLAGS if f.name not in ("detach", "rm", "detach-keys")),
    interspersed=False,
)


class Parsed:
    """What ``run``/``create`` arguments say, beyond the spec."""

    def __init__(self) -> None:
        self.image = ""
        self.rootfs = False
        self.interactive = False
        self.entrypoint: str | None = None
        self.name: str | None = None
        self.labels: dict[str, str] = {}
        self.workdir_given = False
        self.publish_all = False
        self.expose: tuple[str, ...] = ()
        self.auto_remove = False
        self.pull = "missing"
        self.platform = ""
        self.detach = False
        self.volumes_from: list[str] = []
        self.detach_keys = ""
        self.restart: dict[str, object] | None = None


def _idmap(value: str) -> IdMap:
    try:
        c, h, n = (int(x) for x in value.split(":"))
    except ValueError:
        raise InvalidArgument("expected CONTAINER_ID:HOST_ID:SIZE") from None
    return IdMap(container_id=c, host_id=h, size=n)


def _cpus(value: str) -> int:
    nano = parse.parse_cpus(value)
    parse.check_cpus(nano)
    return nano


def _security(opts: list[str]) -> tuple[str | None, bool]:
    seccomp: str | None = None
    nnp = True
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key == "seccomp" and sep:
            seccomp = value
        elif key == "no-new-privileges":
            if value not in ("", "true", "false"):
                fail(f"invalid --security-opt: {opt!r}")
            nnp = value != "false"
        else:
            fail(
                f"invalid --security-opt: {opt!r} (supported: seccomp=unconfined|PROFILE.json, "
                "no-new-privileges[=true|false])"
            )
    return seccomp, nnp


def _env(opts: list[str], files: list[str]) -> tuple[str, ...]:
    lines: list[str] = []
    for path in files:
        try:
            with open(path) as f:
                lines += [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as e:
            fail(f"open {path}: {e.strerror}")
    return parse.parse_env(lines + opts, os.environ)


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            fail(f"invalid label {item!r}: empty name")
        out[key] = value
    return out


def _network(o: Any) -> tuple[str, Network]:
    """The network mode and settings of ``--network``, ``-p``, ``--dns``... (docker's rules)."""
    from kobako.network import configure

    net = Network(
        ports=tuple(m for ms in o.each("publish", parse.parse_publish) for m in ms),
        dns=tuple(o.get_strings("dns")),
        dns_search=tuple(o.get_strings("dns-search")),
        dns_options=tuple(o.get_strings("dns-option")),
        extra_hosts=tuple(o.each("add-host", parse.parse_add_host)),
    )
    try:
        return configure(
            o.get_string("network"),
            net,
            ip=o.get_string("ip"),
            aliases=tuple(o.get_strings("network-alias")),
            publish_all=o.get_bool("publish-all"),
            hostname_given=o.changed("hostname"),
        )
    except InvalidArgument as e:
        fail(str(e))


def build_spec(argv: list[str], verb: str = "run") -> tuple[Spec, Parsed]:
    """Parse ``kobako run``/``create`` arguments into a Spec and the rest of what they say.

    Raises:
        UsageError: A bad flag or value (one line, exit status 125).
        Help: ``--help`` was given.
    """
    o = (CREATE if verb == "create" else COMMAND).parse(argv)
    if not o.args:
        fail(f"'kobako {verb}' requires at least 1 argument")
    image, command = o.args[0], o.args[1:]
    p = Parsed()
    p.image = image
    p.rootfs = o.get_bool("rootfs")
    p.detach = verb == "run" and o.get_bool("detach")
    if p.detach and p.rootfs:
        fail("a detached container needs an image (--rootfs runs in the foreground)")
    p.volumes_from = o.get_strings("volumes-from")
    p.detach_keys = o.get_string("detach-keys") if verb == "run" else ""
    if o.changed("restart"):
        from kobako.runtime.monitor import restart_policy

        p.restart = restart_policy(o.get_string("restart"))
    if o.changed("entrypoint"):
        p.entrypoint = o.get_string("entrypoint")
    if p.rootfs:
        if p.entrypoint is not None:
            command = ([p.entrypoint] if p.entrypoint else []) + command
        if not command:
            fail("no command specified")
    p.name = o.get_string("name") or None
    p.labels = _labels(o.get_strings("label"))
    p.workdir_given = o.changed("workdir")
    p.auto_remove = verb == "run" and o.get_bool("rm")
    if p.auto_remove and p.restart and p.restart["Name"] != "no":
        fail("Conflicting options: --restart and --rm")
    p.interactive = o.get_bool("interactive")
    p.pull = o.get_string("pull")
    p.platform = o.get_string("platform")
    network, net = _network(o)
    p.publish_all = o.get_bool("publish-all")
    p.expose = tuple(o.get_strings("expose"))
    seccomp, nnp = _security(o.get_strings("security-opt"))
    if seccomp not in (None, "unconfined") and not os.path.isfile(seccomp):
        fail(f"opening seccomp profile ({seccomp}) failed: no such file")
    mounts = o.each("volume", parse.parse_volume) + o.each("mount", parse.parse_mount)
    mounts += o.each("tmpfs", parse.parse_tmpfs)
    user = o.get_string("user")
    if user:
        o.parsed("user", parse.parse_user)
    resources = Resources(
        memory=o.parsed("memory", parse.parse_bytes),
        memory_swap=o.parsed("memory-swap", parse.parse_memory_swap),
        memory_reservation=o.parsed("memory-reservation", parse.parse_bytes),
        nano_cpus=o.parsed("cpus", _cpus),
        cpu_shares=o.get_int("cpu-shares") if o.changed("cpu-shares") else None,
        cpuset_cpus=o.parsed("cpuset-cpus", parse.parse_cpuset),
        pids_limit=o.get_int("pids-limit") if o.changed("pids-limit") else None,
    )
    spec = Spec(
        root=image,
        process=Process(
            args=tuple(command),
            env=_env(o.get_strings("env"), o.get_strings("env-file")),
            cwd=o.get_string("workdir") or "/",
            user=user,
            terminal=o.get_bool("tty"),
            rlimits=tuple(o.each("ulimit", parse.parse_ulimit)),
            init=o.get_bool("init"),
        ),
        hostname=o.get_string("hostname"),
        mounts=tuple(mounts),
        namespaces=Namespaces(
            network=network,
            uid_map=tuple(o.each("uidmap", _idmap)),
            gid_map=tuple(o.each("gidmap", _idmap)),
        ),
        resources=resources,
        network=net,
        security=Security(
            privileged=o.get_bool("privileged"),
            cap_add=tuple(o.each("cap-add", parse.parse_capability)),
            cap_drop=tuple(o.each("cap-drop", parse.parse_capability)),
            seccomp=seccomp,
            no_new_privileges=nnp,
            readonly_rootfs=o.get_bool("read-only"),
        ),
    )
    return spec, p


def main(argv: list[str], verb: str = "run") -> int:
    """``kobako run`` (returns the container's exit status as docker does) and ``create``."""
    spec, p = build_spec(argv, verb)
    if p.rootfs:
        if verb == "create":
            fail("kobako create needs an image (--rootfs is for run)")

        from kobako.runtime import run

        if p.publish_all:
            fail("--publish-all needs an image (its exposed ports)")
        spec = _resolve_rootfs_network(spec)
        return _report(_with_stdin(p.interactive, lambda stdin: run(spec, **stdin)))
    from kobako.image.store import Store
    from kobako.runtime import from_image

    store = Store.open()
    image = _image(store, p.image, p.pull, p.platform)
    if p.publish_all:
        from kobako.network import publish_all

        spec = publish_all(spec, image.config.exposed_ports + p.expose)
    doc, final = from_image.create(
        store,
        p.image,
        spec,
        entrypoint=p.entrypoint,
        name=p.name,
        labels=p.labels,
        workdir_given=p.workdir_given,
        auto_remove=p.auto_remove,
        image=image,
        restart_policy=p.restart,
        volumes_from=p.volumes_from,
        open_stdin=p.interactive,
    )
    if verb == "create":
        print(doc["Id"])
        return 0
    if p.detach or spec.process.terminal:
        # Detached, or with a terminal: under the monitor, so that a container run with -t
        # can be left running with the detach keys (ctrl-p ctrl-q) and attached to again.
        from kobako.runtime.monitor import start_detached

        if p.detach:
            start_detached(store, doc, final)
            print(doc["Id"])
            return 0
        if p.interactive and not os.isatty(0):
            fail("the input device is not a TTY")
        from kobako.cli.exec import attach_and_wait

        client: list[Any] = []
        doc = start_detached(store, doc, final, attach=client)
        return attach_and_wait(
            store,
            doc,
            stdin=p.interactive,
            detach_keys=p.detach_keys,
            sig_proxy=True,
            connected=client[0] if client else None,
        )
    return _report(
        _with_stdin(p.interactive, lambda stdin: from_image.start(store, doc, final, **stdin))
    )


def _resolve_rootfs_network(spec: Spec) -> Spec:
    """``--rootfs``: the networks' configuration from the store, as a start does."""
    if not spec.network.endpoints:
        return spec
    from kobako.image.store import Store
    from kobako.network.store import NetworkStore

    networks = NetworkStore(Store.open())
    return spec.replace(
        network=spec.network.replace(
            endpoints=tuple(networks.resolve(e, "", "") for e in spec.network.endpoints)
        )
    )


def _image(store: Store, name: str, policy: str, platform: str) -> ImageRecord:
    """The image to run, pulled first as ``--pull`` says.

    ``missing`` pulls only what the store lacks (the built-in busybox is made, not pulled),
    ``always`` pulls every time, ``never`` never does. Pull progress goes to stderr, as
    docker's does for ``run``.
    """
    from kobako.errors import ImageNotFound
    from kobako.runtime.from_image import find_image

    if policy not in ("always", "missing", "never"):
        fail(f'invalid pull option: \'{policy}\': must be one of "always", "missing" or "never"')
    if policy != "always":
        try:
            return find_image(store, name)
        except ImageNotFound:
            if policy == "never":
                raise
        print(f"Unable to find image '{name}' locally", file=sys.stderr, flush=True)
    from kobako.cli.registry import pull_image

    return find_image(
        store, pull_image(store, name, quiet=False, platform=platform, out=sys.stderr)
    )


def _with_stdin(interactive: bool, call: Callable[[dict[str, Any]], Exit]) -> Exit:
    stdin = -1
    devnull = -1
    if not interactive:
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        stdin = devnull
    try:
        return call({"stdin": stdin, "interactive": interactive})
    finally:
        if devnull >= 0:
            os.close(devnull)


def _report(result: Exit) -> int:
    if result.oom_killed:
        print(f"kobako: container {result.id[:12]} was OOM-killed", file=sys.stderr)
    return result.status
