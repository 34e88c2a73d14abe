"""``client.containers``: containers as docker-py shows them.

``client.containers.run(image, command)`` runs a container to its end and returns what it
wrote to stdout, or raises :class:`~kobako.errors.ContainerError` with its exit status and
stderr, as docker-py does. Arguments keep docker-py's names.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from kobako._model import Model
from kobako.errors import ContainerError, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import datetime
    from typing import IO, Any

    from kobako.client import Client
    from kobako.images import Image
    from kobako.runtime.spec import Mount, Network, PortMapping, Spec

__all__ = ["Container", "ContainerCollection", "ExecResult"]


class ExecResult(NamedTuple):
    """What :meth:`Container.exec_run` returns (docker-py's ``ExecResult``)."""

    exit_code: int | None
    output: Any


class Container(Model):
    """A container in the store (docker-py's ``Container``).

    Attributes:
        attrs: ``docker inspect``'s document for it.
    """

    @property
    def name(self) -> str:
        """Its name (without docker's leading slash)."""
        return str(self.attrs["Name"]).lstrip("/")

    @property
    def status(self) -> str:
        """``created``, ``running``, ``paused``, ``restarting`` or ``exited`` (as of the last
        :meth:`reload`)."""
        return str(self.attrs["State"]["Status"])

    @property
    def labels(self) -> dict[str, str]:
        """Its labels (the image's and its own)."""
        return dict(self.attrs["Config"].get("Labels") or {})

    @property
    def image(self) -> Image | None:
        """The image it was made from (None if that image is gone)."""
        from kobako.errors import ImageNotFound

        try:
            return self.client.images.get(self.attrs["Image"])
        except ImageNotFound:
            return None

    def reload(self) -> None:
        """Read its record again."""
        self.attrs = self.client.containers.get(self.id).attrs

    def rename(self, name: str) -> None:
        """Give it another name (``docker rename``).

        Raises:
            InvalidArgument: The name is not valid.
            Conflict: Another container has it.
        """
        from kobako.runtime.containers import ContainerStore

        self.attrs = ContainerStore(self.client.store).rename(self.attrs, name)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until it is not running; ``{"StatusCode": code, "Error": None}``, as docker-py.

        Raises:
            TimeoutError: It still runs after ``timeout`` seconds.
        """
        from kobako.runtime.monitor import wait_stopped

        self.attrs = wait_stopped(self.client.store, self.id, timeout)
        error = self.attrs["State"].get("Error")
        return {
            "StatusCode": self.attrs["State"].get("ExitCode", 0),
            "Error": {"Message": error} if error else None,
        }

    def start(self) -> None:
        """Start it, detached (``docker start``); nothing happens if it runs already.

        Raises:
            StartError: It could not be set up (its record says why).
        """
        from kobako.runtime.containers import ContainerStore, is_running
        from kobako.runtime.monitor import start_detached

        containers = ContainerStore(self.client.store)
        doc = containers.get(self.id)
        if not is_running(doc):
            doc = start_detached(self.client.store, doc, containers.spec(doc))
        self.attrs = doc

    def stop(self, timeout: float | None = None) -> None:
        """Stop it: its stop signal, then SIGKILL after ``timeout`` seconds (default 10)."""
        from kobako.runtime.monitor import stop

        stop(self.client.store, self.attrs, timeout)
        self.reload()

    def kill(self, signal: str | int | None = None) -> None:
        """Send it a signal (default SIGKILL).

        Raises:
            Conflict: It is not running.
            InvalidArgument: No such signal.
        """
        from kobako.runtime.monitor import kill

        self.reload()
        kill(self.client.store, self.attrs, 9 if signal is None else signal)

    def restart(self, timeout: float | None = None) -> None:
        """Stop it (as :meth:`stop`), then start it again."""
        self.stop(timeout)
        self.start()

    @property
    def ports(self) -> dict[str, list[dict[str, str]] | None]:
        """Its published ports, docker's ``NetworkSettings.Ports`` (as of the last
        :meth:`reload`): ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}``."""
        from kobako.runtime.observe import ports

        return ports(self.attrs)

    def pause(self) -> None:
        """Freeze all its processes (``docker pause``).

        Raises:
            Conflict: It is not running, or is paused already.
            CgroupError: Its cgroup could not be frozen.
        """
        from kobako.runtime.observe import pause

        self.attrs = pause(self.client.store, self.attrs)

    def unpause(self) -> None:
        """Let its processes run again (``docker unpause``).

        Raises:
            Conflict: It is not paused.
        """
        from kobako.runtime.observe import unpause

        self.attrs = unpause(self.client.store, self.attrs)

    def top(self, ps_args: str | None = None) -> dict[str, list[Any]]:
        """Its processes as the host's ``ps`` lists them (``docker top``).

        Args:
            ps_args: Options for ``ps`` (default ``-ef``).

        Returns:
            ``{"Titles": ["UID", "PID", ...], "Processes": [["root", "4242", ...], ...]}``.

        Raises:
            Conflict: It is not running.
        """
        from kobako.runtime.observe import top

        self.reload()
        return top(self.attrs, ps_args)

    def stats(
        self, *, decode: bool | None = None, stream: bool = True, one_shot: bool | None = None
    ) -> dict[str, Any] | Iterator[dict[str, Any]] | Iterator[bytes]:
        """Its resource usage, in the shape of docker's stats API (``docker stats``).

        Args:
            decode: With ``stream``: yield dicts rather than JSON (bytes).
            stream: Yield the usage every second, until it is removed. Otherwise return
                one dict, whose ``precpu_stats`` were read a second before its
                ``cpu_stats`` (for a CPU percentage), as dockerd answers.
            one_shot: Without ``stream``: return at once, ``precpu_stats`` empty.

        Returns:
            ``{"read", "cpu_stats", "precpu_stats", "memory_stats", "pids_stats",
            "blkio_stats", "name", "id", ...}``, or an iterator of them.

        Raises:
            InvalidArgument: ``one_shot`` with ``stream``, or ``decode`` without it.

        Example:
            >>> container.stats(stream=False)["memory_stats"]["limit"]
            67108864
        """
        from kobako.runtime import observe

        if stream and one_shot:
            raise InvalidArgument("one_shot is only available in conjunction with stream=False")
        if not stream and decode:
            raise InvalidArgument("decode is only available in conjunction with stream=True")
        self.reload()
        if not stream:
            return observe.stats(self.attrs, one_shot=bool(one_shot))
        samples = observe.stream(self.client.store, self.id)
        if decode:
            return samples
        import json

        return (json.dumps(s).encode() for s in samples)

    def remove(self, v: bool = False, force: bool = False) -> None:
        """Remove it (``docker rm``); ``v`` removes its anonymous volumes too, ``force`` kills it
        first if it runs.

        Raises:
            Conflict: It runs, and ``force`` is not given.
        """
        from kobako.runtime.containers import ContainerStore, is_running
        from kobako.runtime.monitor import stop

        containers = ContainerStore(self.client.store)
        doc = containers.get(self.id)
        if force and is_running(doc):
            stop(self.client.store, doc, 0, "SIGKILL")
            doc = containers.get(self.id)
        containers.remove(doc, volumes=v)

    def attach(
        self,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = False,
        logs: bool = False,
    ) -> Any:
        """Its output until it exits (docker-py's ``attach``): bytes, or with ``stream`` a
        generator of chunks as they come; ``logs`` puts what it wrote before first.

        Raises:
            Conflict: It is not running.
        """
        import time

        from kobako.runtime.attach import output

        self.reload()
        connected = time.time()
        live = output(self.attrs)
        wanted = {1} if stdout else set()
        wanted |= {2} if stderr else set()

        def chunks() -> Iterator[bytes]:
            if logs:
                past = self.logs(stdout=stdout, stderr=stderr, until=connected)
                yield past if isinstance(past, bytes) else b"".join(past)
            for number, data in live:
                if number in wanted:
                    yield data

        if stream:
            return chunks()
        return b"".join(chunks())

    def exec_run(
        self,
        cmd: str | Sequence[str],
        stdout: bool = True,
        stderr: bool = True,
        stdin: bool = False,
        tty: bool = False,
        privileged: bool = False,
        user: str = "",
        detach: bool = False,
        environment: Mapping[str, str] | Sequence[str] | None = None,
        workdir: str | None = None,
        demux: bool = False,
    ) -> ExecResult:
        """Run a command in it (``docker exec``), as docker-py's ``exec_run``.

        Returns:
            ``ExecResult(exit_code, output)``: the output as bytes (stdout and stderr
            interleaved), a ``(stdout, stderr)`` pair with ``demux``; ``(None, None)`` parts
            with ``detach``.

        Raises:
            Conflict: It is not running.
            CommandNotFound, CommandNotExecutable: The command cannot be run.
        """
        from kobako.runtime.execute import exec_in

        if stdin or tty:
            raise InvalidArgument(
                "exec_run: stdin and tty need a client on a socket; use the CLI's exec -it"
            )
        self.reload()
        argv = list(_command(cmd))
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        out = os.memfd_create("kobako-exec-out", os.MFD_CLOEXEC)
        err = os.memfd_create("kobako-exec-err", os.MFD_CLOEXEC) if demux else out
        try:
            code = exec_in(
                self.client.store,
                self.attrs,
                argv,
                env=_env(environment),
                workdir=workdir,
                user=user or None,
                tty=False,
                detach=detach,
                privileged=privileged,
                stdin=null,
                stdout=out if stdout and not detach else null,
                stderr=err if stderr and not detach else null,
            )
            if detach:
                return ExecResult(None, None)
            if demux:
                return ExecResult(
                    code,
                    (_read_all(out) if stdout else None, _read_all(err) if stderr else None),
                )
            return ExecResult(code, _read_all(out))
        finally:
            for fd in {null, out, err}:
                os.close(fd)

    def diff(self) -> list[dict[str, Any]]:
        """Its changes to its image: ``[{"Path": "/x", "Kind": 0|1|2}]`` (C, A, D)."""
        from kobako.runtime.from_image import changes

        kinds = {"C": 0, "A": 1, "D": 2}
        return [{"Path": p, "Kind": kinds[k]} for k, p in changes(self.client.store, self.attrs)]

    def commit(
        self,
        repository: str | None = None,
        tag: str | None = None,
        message: str = "",
        author: str = "",
        changes: list[str] | None = None,
    ) -> Image:
        """A new image from its changes (``docker commit``)."""
        from kobako.runtime.from_image import commit

        name = f"{repository}:{tag}" if repository and tag else repository
        record = commit(
            self.client.store,
            self.attrs,
            name,
            message=message,
            author=author,
            changes_=list(changes or ()),
        )
        return self.client.images.get(record.id)

    def get_archive(
        self, path: str, chunk_size: int = 2 * 1024 * 1024
    ) -> tuple[Iterator[bytes], dict[str, Any]]:
        """A file or directory of it as a tar (``docker cp CONTAINER:PATH -``).

        Returns:
            The tar in chunks, and docker's stat of the path (``name``, ``size``, ``mode``,
            ``mtime``, ``linkTarget``).

        Raises:
            NotFound: The path is not in the container.
        """
        import tempfile

        from kobako.runtime.copy import get_archive

        f = tempfile.TemporaryFile()  # noqa: SIM115 (the chunks' generator closes it)
        try:
            stat = get_archive(self.client.store, self.attrs, path, f)
        except BaseException:
            f.close()
            raise

        def chunks() -> Iterator[bytes]:
            with f:
                f.seek(0)
                while chunk := f.read(chunk_size):
                    yield chunk

        return chunks(), stat

    def put_archive(self, path: str, data: bytes | IO[bytes]) -> bool:
        """Extract a tar (bytes or a binary file) into its directory ``path`` (``docker cp -
        CONTAINER:PATH``); entries keep the owners the tar gives them. Returns True.

        Raises:
            NotFound: The directory is not in the container.
            Conflict: ``path`` is not a directory, or an entry clashes with what is there.
            InvalidArgument: A malformed tar, or an entry that would land outside ``path``.
        """
        import io

        from kobako.runtime.copy import put_archive

        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        put_archive(self.client.store, self.attrs, path, stream)
        return True

    def export(self) -> Iterator[bytes]:
        """Its root filesystem as a tar, in chunks (``docker export``)."""
        import tempfile

        from kobako.runtime.from_image import export

        with tempfile.TemporaryFile() as f:
            export(self.client.store, self.attrs, f.fileno())
            f.seek(0)
            while chunk := f.read(1 << 20):
                yield chunk

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = False,
        timestamps: bool = False,
        tail: str | int = "all",
        since: datetime | float | None = None,
        follow: bool | None = None,
        until: datetime | float | None = None,
    ) -> bytes | Iterator[bytes]:
        """Its output (``docker logs``): all of it as bytes, or with ``stream`` a generator of
        chunks (a line each), as docker-py returns them.

        Args:
            stdout: Include what it wrote to stdout.
            stderr: Include what it wrote to stderr.
            stream: Return a generator instead of the bytes.
            timestamps: Put the time each line was logged before it (RFC 3339, ns, UTC).
            tail: ``"all"``, or the number of lines to show from the end.
            since: Only lines logged at or after this time: a datetime (naive: local time)
                or Unix seconds (not positive: no limit).
            follow: Go on until it stops; default: ``stream``.
            until: Only lines logged at or before this time, as ``since``.

        Raises:
            ContainerNotFound: It has been removed.
            InvalidArgument: ``since`` or ``until`` is neither a datetime nor a number.
        """
        from kobako.runtime.containers import ContainerStore
        from kobako.runtime.logs import parse_tail, read

        lines = read(
            self.client.store,
            ContainerStore(self.client.store).get(self.id),
            stdout=stdout,
            stderr=stderr,
            since=_unix_ns(since, "since"),
            until=_unix_ns(until, "until"),
            tail=parse_tail(tail),
            follow=stream if follow is None else follow,
        )
        chunks = (line.render(timestamps) for line in lines)
        return chunks if stream else b"".join(chunks)


def _unix_ns(value: datetime | float | None, name: str) -> int | None:
    """docker-py's ``since``/``until`` as Unix nanoseconds; None for no limit."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (value.astimezone(dt.UTC) - epoch) // dt.timedelta(microseconds=1) * 1000
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return round(value * 1_000_000_000) if value and value > 0 else None
    raise InvalidArgument(
        f"{name} value should be datetime or positive int/float, not {type(value).__name__}"
    )


def _volumes(volumes: Mapping[str, Any] | Sequence[str] | None) -> list[Mount]:
    from kobako.runtime import parse

    if volumes is None:
        return []
    specs: list[str] = []
    if isinstance(volumes, dict):
        for host, bind in volumes.items():
            if isinstance(bind, dict):
                mode = bind.get("mode", "rw")
                specs.append(f"{host}:{bind['bind']}:{mode}")
            else:
                specs.append(f"{host}:{bind}")
    else:
        specs = list(volumes)
    return [parse.parse_volume(v) for v in specs]


def _env(environment: Mapping[str, str] | Sequence[str] | None) -> tuple[str, ...]:
    if environment is None:
        return ()
    if isinstance(environment, dict):
        return tuple(f"{k}={v}" for k, v in environment.items())
    return tuple(environment)


def _command(command: str | Sequence[str] | None) -> tuple[str, ...]:
    if command is None:
        return ()
    if isinstance(command, str):
        import shlex

        return tuple(shlex.split(command))
    return tuple(command)


class ContainerCollection:
    """The containers of a :class:`~kobako.Client` (docker-py's ``client.containers``)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, container_id: str) -> Container:
        """A container by ID, name or unique ID prefix.

        Raises:
            ContainerNotFound: No such container.
        """
        from kobako.runtime.containers import ContainerStore

        return Container(self.client, ContainerStore(self.client.store).get(container_id))

    def list(self, all: bool = False) -> list[Container]:
        """Containers, newest first (only running ones unless ``all``)."""
        from kobako.runtime.containers import ContainerStore

        docs = ContainerStore(self.client.store).list()
        if not all:
            docs = [d for d in docs if d["State"].get("Status") in ("running", "paused")]
        return [Container(self.client, d) for d in docs]

    def run(
        self,
        image: str | Image,
        command: str | Sequence[str] | None = None,
        *,
        stdout: bool = True,
        stderr: bool = False,
        remove: bool = False,
        auto_remove: bool = False,
        detach: bool = False,
        name: str | None = None,
        entrypoint: str | Sequence[str] | None = None,
        environment: Mapping[str, str] | Sequence[str] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        volumes: Mapping[str, Any] | Sequence[str] | None = None,
        tmpfs: Mapping[str, str] | None = None,
        read_only: bool = False,
        mem_limit: int | str | None = None,
        memswap_limit: int | str | None = None,
        mem_reservation: int | str | None = None,
        nano_cpus: int | None = None,
        cpu_shares: int | None = None,
        cpuset_cpus: str | None = None,
        pids_limit: int | None = None,
        network_mode: str | None = None,
        network: str | None = None,
        ports: Mapping[str, Any] | None = None,
        publish_all_ports: bool = False,
        dns: Sequence[str] | None = None,
        dns_search: Sequence[str] | None = None,
        dns_opt: Sequence[str] | None = None,
        extra_hosts: Mapping[str, str] | Sequence[str] | None = None,
        privileged: bool = False,
        cap_add: Sequence[str] | None = None,
        cap_drop: Sequence[str] | None = None,
        security_opt: Sequence[str] | None = None,
        init: bool = False,
        tty: bool = False,
        restart_policy: Mapping[str, Any] | None = None,
        _start: bool = True,
    ) -> Any:
        """Run a command in a new container from an image and return its output, or the
        :class:`Container` with ``detach=True``.

        Args:
            image: The image (name, ID, or :class:`~kobako.images.Image`).
            command: Arguments (a list, or a string split as a shell would); the image's
                ``Cmd`` if None.
            stdout: Return what the command wrote to stdout.
            stderr: Return what it wrote to stderr too (interleaved with stdout).
            remove: Remove the container once it exits (``--rm``); ``auto_remove`` too.
            detach: Start it in the background and return the :class:`Container` at once.
            name: The container's name.
            entrypoint: Replaces the image's (and drops its ``Cmd``, as Docker does).
            environment: ``{"K": "v"}`` or ``["K=v"]``, added to the image's.
            working_dir: Replaces the image's ``WorkingDir``.
            user: Replaces the image's ``User``.
            hostname: The container's hostname.
            labels: Added to the image's labels.
            volumes: ``{"/host": {"bind": "/path", "mode": "ro"}}`` or ``["/host:/path:ro"]``;
                a key that is not a path names a volume (made on first use), as in
                ``{"cache": {"bind": "/cache", "mode": "rw"}}`` or ``["cache:/cache"]``.
            tmpfs: ``{"/path": "size=64m"}``.
            read_only: A read-only root filesystem.
            mem_limit: Memory limit (bytes or ``"64m"``); ``memswap_limit``,
                ``mem_reservation`` likewise.
            nano_cpus: CPU quota in billionths of a CPU; ``cpu_shares`` and ``cpuset_cpus``
                as in Docker.
            pids_limit: Maximum number of tasks.
            network_mode: ``"bridge"`` (the default), ``"none"``, ``"host"`` or
                ``"container:NAME"``.
            network: The name of a network to run it on (not with ``network_mode``).
            ports: Published ports, docker-py's way: ``{"80/tcp": 8080}``, ``{"80": None}``
                (a free host port), ``{"53/udp": ("127.0.0.1", 5353)}``, ``{"80": [8080, 8081]}``.
            publish_all_ports: Publish the image's exposed ports on free host ports (``-P``).
            dns: Name servers for its resolv.conf; ``dns_search``, ``dns_opt`` likewise.
            extra_hosts: ``{"name": "ip"}`` lines for its /etc/hosts.
            privileged: Every capability, no seccomp, the host's devices.
            cap_add: Capabilities to add; ``cap_drop`` to drop.
            security_opt: ``["seccomp=unconfined", "no-new-privileges=false"]``.
            init: Run kobako's init as PID 1.
            tty: Give the command a pseudo-terminal.
            restart_policy: ``{"Name": "on-failure", "MaximumRetryCount": 3}``; the names are
                ``no``, ``always``, ``unless-stopped`` and ``on-failure``.

        Returns:
            What the command wrote (stdout; plus stderr with ``stderr=True``); with
            ``detach=True``, the running :class:`Container`.

        Raises:
            ContainerError: The command exited with a non-zero status (``.exit_status``,
                ``.stderr``, ``.container``).
            ImageNotFound: No such image, here or in its registry (a missing image is pulled,
                as docker-py does).
            InvalidArgument: A bad argument.
            StartError: The container could not be set up.
        """
        from kobako.errors import ImageNotFound
        from kobako.runtime import from_image

        ref = image if isinstance(image, str) else image.id
        spec = self._spec(
            command=command,
            environment=environment,
            working_dir=working_dir,
            user=user,
            hostname=hostname,
            volumes=volumes,
            tmpfs=tmpfs,
            read_only=read_only,
            mem_limit=mem_limit,
            memswap_limit=memswap_limit,
            mem_reservation=mem_reservation,
            nano_cpus=nano_cpus,
            cpu_shares=cpu_shares,
            cpuset_cpus=cpuset_cpus,
            pids_limit=pids_limit,
            network_mode=network_mode,
            network=network,
            ports=ports,
            dns=dns,
            dns_search=dns_search,
            dns_opt=dns_opt,
            extra_hosts=extra_hosts,
            privileged=privileged,
            cap_add=cap_add,
            cap_drop=cap_drop,
            security_opt=security_opt,
            init=init,
            tty=tty,
        )
        label_map = (
            dict(labels)
            if isinstance(labels, dict)
            else {k: v for k, _, v in (item.partition("=") for item in labels or ())}
        )
        store = self.client.store
        try:
            record = from_image.find_image(store, ref)
        except ImageNotFound:  # docker-py pulls what is missing, then runs it
            self.client.images.pull(ref)
            record = from_image.find_image(store, ref)
        if publish_all_ports:
            from kobako.network import publish_all

            spec = publish_all(spec, record.config.exposed_ports)
        doc, final = from_image.create(
            store,
            ref,
            spec,
            entrypoint=None if entrypoint is None else _entrypoint(entrypoint),
            name=name,
            labels=label_map,
            workdir_given=working_dir is not None,
            auto_remove=remove or auto_remove,
            image=record,
            restart_policy=_restart_policy(restart_policy),
        )
        if not _start:
            return Container(self.client, doc)
        if detach:
            from kobako.runtime.monitor import start_detached

            return Container(self.client, start_detached(store, doc, final))
        out = os.memfd_create("kobako-stdout", os.MFD_CLOEXEC)
        err = out if stderr and stdout else os.memfd_create("kobako-stderr", os.MFD_CLOEXEC)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            result = from_image.start(store, doc, final, stdin=null, stdout=out, stderr=err)
            output = _read_all(out) if stdout else b""
            if stderr and not stdout:
                output = _read_all(err)
            if result.status != 0:
                container = None if (remove or auto_remove) else Container(self.client, doc)
                raise ContainerError(
                    result.status,
                    list(final.process.args),
                    _read_all(err),
                    container=container,
                    image=ref,
                )
            return output
        finally:
            os.close(null)
            os.close(out)
            if err != out:
                os.close(err)

    def create(
        self, image: str | Image, command: str | Sequence[str] | None = None, **kwargs: Any
    ) -> Container:
        """Create a container without starting it (``docker create``); the arguments are
        :meth:`run`'s."""
        return self.run(image, command, _start=False, **kwargs)  # type: ignore[no-any-return]

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove every stopped container: ``{"ContainersDeleted": [ids], "SpaceReclaimed": n}``."""
        from kobako.runtime.containers import ContainerStore, is_running

        if filters:
            raise InvalidArgument("prune filters are not supported")
        containers = ContainerStore(self.client.store)
        deleted = []
        for doc in containers.list():
            if not is_running(doc):
                containers.remove(doc)
                deleted.append(doc["Id"])
        return {"ContainersDeleted": deleted, "SpaceReclaimed": 0}

    def _spec(self, **kw: Any) -> Spec:
        from kobako.runtime import parse
        from kobako.runtime.spec import Namespaces, Process, Resources, Security, Spec

        seccomp: str | None = None
        nnp = True
        for opt in kw["security_opt"] or ():
            key, _, value = opt.partition("=")
            if key == "seccomp":
                seccomp = value
            elif key == "no-new-privileges":
                nnp = value != "false"
            else:
                raise InvalidArgument(f"invalid security_opt {opt!r}")
        mode, net = _network(kw)

        def size(value: int | str | None) -> int | None:
            return None if value is None else parse.parse_bytes(value)

        mounts = _volumes(kw["volumes"])
        for path, options in (kw["tmpfs"] or {}).items():
            mounts.append(parse.parse_tmpfs(f"{path}:{options}" if options else path))
        return Spec(
            root="",
            process=Process(
                args=_command(kw["command"]),
                env=_env(kw["environment"]),
                cwd=kw["working_dir"] or "/",
                user=kw["user"] or "",
                terminal=kw["tty"],
                init=kw["init"],
            ),
            hostname=kw["hostname"] or "",
            mounts=tuple(mounts),
            namespaces=Namespaces(network=mode),
            network=net,
            resources=Resources(
                memory=size(kw["mem_limit"]),
                memory_swap=None
                if kw["memswap_limit"] is None
                else parse.parse_memory_swap(kw["memswap_limit"]),
                memory_reservation=size(kw["mem_reservation"]),
                nano_cpus=kw["nano_cpus"],
                cpu_shares=kw["cpu_shares"],
                cpuset_cpus=kw["cpuset_cpus"],
                pids_limit=kw["pids_limit"],
            ),
            security=Security(
                privileged=kw["privileged"],
                cap_add=tuple(parse.parse_capability(c) for c in kw["cap_add"] or ()),
                cap_drop=tuple(parse.parse_capability(c) for c in kw["cap_drop"] or ()),
                seccomp=seccomp,
                no_new_privileges=nnp,
                readonly_rootfs=kw["read_only"],
            ),
        )


def _ports(ports: Mapping[str, Any] | None) -> tuple[PortMapping, ...]:
    """docker-py's ``ports`` as port mappings."""
    from kobako.runtime import parse

    out: list[PortMapping] = []
    for key, value in (ports or {}).items():
        number, _, proto = str(key).partition("/")
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            if target is None:
                host = ""
            elif isinstance(target, tuple):
                host = f"{target[0]}:{target[1] if len(target) > 1 else ''}"
            else:
                host = str(target)
            text = f"{host}:{number}" if host else number
            out.extend(parse.parse_publish(f"{text}/{proto or 'tcp'}"))
    return tuple(out)


def _network(kw: dict[str, Any]) -> tuple[str, Network]:
    """The network mode and settings of docker-py's ``network_mode``, ``network``, ``ports``…"""
    from kobako.runtime import parse
    from kobako.runtime.spec import Network

    if kw["network"] and kw["network_mode"]:
        raise InvalidArgument("The options 'network' and 'network_mode' can not be used together.")
    mode = kw["network"] or kw["network_mode"] or ""
    hosts = kw["extra_hosts"] or ()
    if isinstance(hosts, dict):
        hosts = [f"{name}:{ip}" for name, ip in hosts.items()]
    net = Network(
        ports=_ports(kw["ports"]),
        dns=tuple(kw["dns"] or ()),
        dns_search=tuple(kw["dns_search"] or ()),
        dns_options=tuple(kw["dns_opt"] or ()),
        extra_hosts=tuple(parse.parse_add_host(h) for h in hosts),
    )
    from kobako.network import configure

    return configure(mode, net, hostname_given=bool(kw["hostname"]))


def _restart_policy(policy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not policy:
        return None
    from kobako.runtime.monitor import restart_policy

    name = str(policy.get("Name") or "no")
    count = int(policy.get("MaximumRetryCount") or 0)
    return restart_policy(f"{name}:{count}" if name == "on-failure" and count else name)


def _entrypoint(entrypoint: str | Sequence[str]) -> str | list[str]:
    if isinstance(entrypoint, str):
        import shlex

        parts = shlex.split(entrypoint)
        return parts if len(parts) != 1 else parts[0]
    return list(entrypoint)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
