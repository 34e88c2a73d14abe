"""``kobako run``: run a command in a new container (``docker run``'s flags).

For now the image position holds a root filesystem directory, given with ``--rootfs`` as
podman spells it: ``kobako run --rm --rootfs DIR CMD [ARG...]``.
"""

from __future__ import annotations

import os
import sys

from kobako.cli.args import Parser, convert
from kobako.cli.main import fail
from kobako.errors import InvalidArgument
from kobako.runtime import parse
from kobako.runtime.spec import IdMap, Namespaces, Process, Resources, Security, Spec


def _parser() -> Parser:
    p = Parser("kobako run", "Run a command in a new container")
    a = p.add_argument
    a("--rootfs", action="store_true", help="The first argument is a root filesystem directory")
    a("-i", "--interactive", action="store_true", help="Keep STDIN open")
    a("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    a("-d", "--detach", action="store_true", help="Run container in background")
    a("--rm", action="store_true", help="Remove the container when it exits")
    a("--name", help="Assign a name to the container")
    a("-e", "--env", action="append", default=[], help="Set environment variables")
    a("--env-file", action="append", default=[], help="Read in a file of environment variables")
    a("-w", "--workdir", default="", help="Working directory inside the container")
    a("-u", "--user", default="", help="Username or UID (format: <name|uid>[:<group|gid>])")
    a("-h", "--hostname", default="", help="Container host name")
    a("-v", "--volume", action="append", default=[], help="Bind mount a volume")
    a("--mount", action="append", default=[], help="Attach a filesystem mount to the container")
    a("--tmpfs", action="append", default=[], help="Mount a tmpfs directory")
    a("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    a("--privileged", action="store_true", help="Give extended privileges to this container")
    a("--cap-add", action="append", default=[], help="Add Linux capabilities")
    a("--cap-drop", action="append", default=[], help="Drop Linux capabilities")
    a("--security-opt", action="append", default=[], help="Security Options")
    a("--ulimit", action="append", default=[], help="Ulimit options")
    a("--init", action="store_true", help="Run an init inside the container")
    a("--network", "--net", default="none", help="Connect a container to a network (none, host)")
    a("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image")
    a("-m", "--memory", default=None, help="Memory limit")
    a(
        "--memory-swap",
        default=None,
        help="Swap limit equal to memory plus swap: '-1' for unlimited",
    )
    a("--memory-reservation", default=None, help="Memory soft limit")
    a("--cpus", default=None, help="Number of CPUs")
    a("-c", "--cpu-shares", default=None, help="CPU shares (relative weight)")
    a("--cpuset-cpus", default=None, help="CPUs in which to allow execution (0-3, 0,1)")
    a("--pids-limit", default=None, help="Tune container pids limit (set -1 for unlimited)")
    a("--uidmap", action="append", default=[], help="User namespace uid map CONTAINER:HOST:SIZE")
    a("--gidmap", action="append", default=[], help="User namespace gid map CONTAINER:HOST:SIZE")
    a("image", metavar="ROOTFS", help="Root filesystem directory (with --rootfs)")
    a("command", nargs="...", help="Command and arguments")
    return p


def _idmap(value: str) -> IdMap:
    try:
        c, h, n = (int(x) for x in value.split(":"))
    except ValueError:
        raise InvalidArgument("expected CONTAINER_ID:HOST_ID:SIZE") from None
    return IdMap(container_id=c, host_id=h, size=n)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument("not an integer") from None


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


def build_spec(argv: list[str]) -> tuple[Spec, bool]:
    """Parse ``kobako run`` arguments into a Spec; also returns whether stdin is forwarded."""
    o = _parser().parse_args(argv)
    if o.detach:
        fail("detached containers (-d) are not supported yet")
    if not o.rootfs:
        fail(
            f"unable to find image '{o.image}': images are not supported yet; "
            "run a root filesystem directory with --rootfs DIR"
        )
    command = list(o.command)
    if o.entrypoint is not None:
        command = ([o.entrypoint] if o.entrypoint else []) + command
    if not command:
        fail("no command specified")
    if o.network not in ("none", "host"):
        fail(f"network {o.network} not found (supported: none, host)")
    seccomp, nnp = _security(o.security_opt)
    if seccomp not in (None, "unconfined") and not os.path.isfile(seccomp):
        fail(f"opening seccomp profile ({seccomp}) failed: no such file")
    mounts = [convert("-v, --volume", v, parse.parse_volume) for v in o.volume]
    mounts += [convert("--mount", v, parse.parse_mount) for v in o.mount]
    mounts += [convert("--tmpfs", v, parse.parse_tmpfs) for v in o.tmpfs]
    if o.user:
        convert("-u, --user", o.user, parse.parse_user)
    memory_swap = None
    if o.memory_swap is not None:
        memory_swap = convert("--memory-swap", o.memory_swap, parse.parse_memory_swap)
    nano_cpus = None
    if o.cpus is not None:
        nano_cpus = convert("--cpus", o.cpus, parse.parse_cpus)
        convert("--cpus", str(nano_cpus), lambda v: parse.check_cpus(int(v)))
    resources = Resources(
        memory=None if o.memory is None else convert("-m, --memory", o.memory, parse.parse_bytes),
        memory_swap=memory_swap,
        memory_reservation=None
        if o.memory_reservation is None
        else convert("--memory-reservation", o.memory_reservation, parse.parse_bytes),
        nano_cpus=nano_cpus,
        cpu_shares=None
        if o.cpu_shares is None
        else convert("-c, --cpu-shares", o.cpu_shares, _int),
        cpuset_cpus=None
        if o.cpuset_cpus is None
        else convert("--cpuset-cpus", o.cpuset_cpus, parse.parse_cpuset),
        pids_limit=None if o.pids_limit is None else convert("--pids-limit", o.pids_limit, _int),
    )
    if not o.rm and o.name:
        pass  # containers are not kept yet; --name and --rm are accepted for docker parity
    spec = Spec(
        root=o.image,
        process=Process(
            args=tuple(command),
            env=_env(o.env, o.env_file),
            cwd=o.workdir or "/",
            user=o.user,
            terminal=o.tty,
            rlimits=tuple(convert("--ulimit", v, parse.parse_ulimit) for v in o.ulimit),
            init=o.init,
        ),
        hostname=o.hostname,
        mounts=tuple(mounts),
        namespaces=Namespaces(
            network=o.network,
            uid_map=tuple(convert("--uidmap", v, _idmap) for v in o.uidmap),
            gid_map=tuple(convert("--gidmap", v, _idmap) for v in o.gidmap),
        ),
        resources=resources,
        security=Security(
            privileged=o.privileged,
            cap_add=tuple(convert("--cap-add", v, parse.parse_capability) for v in o.cap_add),
            cap_drop=tuple(convert("--cap-drop", v, parse.parse_capability) for v in o.cap_drop),
            seccomp=seccomp,
            no_new_privileges=nnp,
            readonly_rootfs=o.read_only,
        ),
    )
    return spec, o.interactive


def main(argv: list[str]) -> int:
    """``kobako run``; returns the container's exit status as docker does."""
    spec, interactive = build_spec(argv)
    from kobako.runtime import run

    stdin = -1
    devnull = -1
    if not interactive:
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        stdin = devnull
    try:
        result = run(spec, stdin=stdin, interactive=interactive)
    finally:
        if devnull >= 0:
            os.close(devnull)
    if result.oom_killed:
        print(f"kobako: container {result.id[:12]} was OOM-killed", file=sys.stderr)
    return result.status
