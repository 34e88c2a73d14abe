"""Run another command in a running container (``docker exec``).

The command joins all of the container's namespaces, its cgroup and its root, and gets the
same confinement as the container's first process: its capabilities (or ``--privileged``'s),
its seccomp profile, no_new_privs, its user unless ``-u`` says otherwise. The native core
clones it into the container's pid namespace and cgroup at once, and the child enters the
other namespaces and the root before anything of the command runs; every fd of kobako's is
closed on exec (the runc CVE-2024-21626 class: no host directory reaches the container).
"""

from __future__ import annotations

import os

from kobako import _native
from kobako.errors import Conflict, InvalidArgument
from kobako.runtime import launch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store

__all__ = ["exec_in"]

# (name in /proc/PID/ns, CLONE_NEW* flag), the user namespace first: the others are owned by
# it, so entering it first gives the rights to enter them.
_NAMESPACES = (
    ("user", launch.CLONE_NEWUSER),
    ("ipc", launch.CLONE_NEWIPC),
    ("uts", launch.CLONE_NEWUTS),
    ("net", launch.CLONE_NEWNET),
    ("cgroup", launch.CLONE_NEWCGROUP),
    ("mnt", launch.CLONE_NEWNS),
)
_MAX_ID_FILE = 4 << 20


def _differs(pid: int, name: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino


def exec_in(
    store: Store,
    doc: dict[str, Any],
    argv: list[str],
    *,
    env: tuple[str, ...] = (),
    workdir: str | None = None,
    user: str | None = None,
    tty: bool = False,
    interactive: bool = False,
    detach: bool = False,
    privileged: bool = False,
    stdin: int = -1,
    stdout: int = -1,
    stderr: int = -1,
) -> int:
    """Run ``argv`` in the running container ``doc``; its exit status (0 with ``detach``).

    Args:
        store: The store the container belongs to.
        doc: The container's record.
        argv: The command; ``argv[0]`` is looked up in the container's ``PATH``.
        env: ``KEY=VALUE`` added to the container's environment.
        workdir: The working directory (default: the container's).
        user: ``-u`` (default: the container's user).
        tty: Give the command a pseudo-terminal.
        interactive: Forward our stdin to it (with ``tty``: to the terminal).
        detach: Return once it runs; it is not waited for.
        privileged: Every capability kobako has, no seccomp, as ``docker exec --privileged``.
        stdin: Host fds for its stdin, stdout, stderr (-1: ours); ignored with ``tty``.

    Raises:
        Conflict: The container is not running, or is paused.
        CommandNotFound, CommandNotExecutable, StartError: As for the container's start.
    """
    from kobako.runtime.cgroups import Cgroup
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.lifecycle import _decode, _seccomp, _SignalForwarder
    from kobako.runtime.proc import process_start

    if not argv:
        raise InvalidArgument("no command specified")
    containers = ContainerStore(store)
    doc = containers.get(doc["Id"])
    state = doc["State"]
    name = doc["Name"].lstrip("/")
    if state.get("Status") == "paused":
        raise Conflict(f"Container {doc['Id']} is paused, unpause the container before exec")
    pid = state.get("Pid") or 0
    if state.get("Status") != "running" or not pid:
        raise Conflict(f"container {doc['Id'][:12]} is not running")
    spec = containers.spec(doc)
    if privileged:
        spec = spec.replace(security=spec.security.replace(privileged=True))
    fds: list[int] = []
    pidfd = os.pidfd_open(pid)
    fds.append(pidfd)
    pty = None
    try:
        if process_start(pid) != state.get("PidStart"):
            raise Conflict(f"container {name} is not running")
        joined = []
        for ns, flag in _NAMESPACES:
            if _differs(pid, ns):
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                fds.append(fd)
                joined.append((fd, flag))
        pid_ns = -1
        if _differs(pid, "pid"):
            pid_ns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(pid_ns)
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(root)
        root_path = f"/proc/self/fd/{root}"

        from kobako.runtime import parse

        proc = spec.process
        passwd = _native.read_in_root(root_path, "/etc/passwd", _MAX_ID_FILE)
        group = _native.read_in_root(root_path, "/etc/group", _MAX_ID_FILE)
        resolved = parse.resolve_user(user or proc.user, passwd, group)
        cwd = workdir or proc.cwd or "/"
        if not cwd.startswith("/"):
            raise InvalidArgument(
                f"the working directory {cwd!r} is invalid, it needs to be an absolute path"
            )
        exec_spec = spec.replace(
            process=proc.replace(env=(*proc.env, *env), terminal=tty, user=user or proc.user)
        )
        hostname = spec.hostname or doc["Id"][:12]
        full_env = launch._env(exec_spec, hostname, resolved.home)
        caps = launch.capability_names(exec_spec)
        mask = parse.capability_mask(caps)
        cgroup = Cgroup.find(doc["Id"])
        if cgroup is not None and cgroup.clone_fd is not None:
            fds.append(cgroup.clone_fd)
        if tty:
            from kobako.runtime.tty import open_pty_in

            pty = open_pty_in(root)
        rlimits = [
            (
                parse.RLIMIT_NUMBERS[r.type],
                2**64 - 1 if r.soft < 0 else r.soft,
                2**64 - 1 if r.hard < 0 else r.hard,
            )
            for r in proc.rlimits
        ]
        plan = {
            "rootfs": "/",
            "overlay": None,
            "argv": list(argv),
            "env": full_env,
            "exec_paths": launch._exec_paths(argv[0], full_env, cwd),
            "cwd": cwd,
            "hostname": None,
            "namespaces": 0,
            "uid_map": None,
            "gid_map": None,
            "mounts": [],
            "devices": [],
            "symlinks": [],
            "masked_paths": [],
            "readonly_paths": [],
            "readonly_rootfs": False,
            "rlimits": rlimits,
            "uid": resolved.uid,
            "gid": resolved.gid,
            "groups": list(resolved.additional_gids),
            "caps": (mask, mask, mask, 0, 0, launch._last_cap()),
            "no_new_privs": exec_spec.security.no_new_privileges,
            "seccomp": _seccomp(exec_spec, caps),
            "tty_fd": pty.slave if pty else -1,
            "stdio": (stdin, stdout, stderr),
            "cgroup_fd": -1 if cgroup is None or cgroup.clone_fd is None else cgroup.clone_fd,
            "cgroup_join": []
            if cgroup is None or cgroup.clone_fd is not None
            else list(cgroup.join_files),
            "init": False,
            "join": (joined, pid_ns, root),
            "netns": -1,
        }
        with _SignalForwarder() as forwarder:
            child, child_fd = _native.spawn(plan)
            fds.append(child_fd)
            for fd in fds[:-1]:
                os.close(fd)
            del fds[:-1]
            if detach:
                _reap_later(child)
                return 0
            forwarder.started(child)
            if pty:
                pty.close_slave()
                pty.proxy(stdin=interactive, wakeup=forwarder.wakeup_r)
            return _decode(forwarder.wait(child, child_fd))
    finally:
        for fd in fds:
            os.close(fd)
        if pty:
            pty.close()


def _reap_later(pid: int) -> None:
    """Reap a detached command when it ends (it is our child while we live)."""
    import threading

    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
