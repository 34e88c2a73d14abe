"""Containers made from images: the image's config merged with the caller's, then run.

Docker's rules, as ``docker run`` applies them:

- ``Entrypoint`` and ``Cmd``: the command is ``Entrypoint + Cmd``; arguments given replace
  ``Cmd``; ``--entrypoint`` replaces ``Entrypoint`` *and* drops the image's ``Cmd`` (an
  empty ``--entrypoint ""`` leaves only the arguments).
- ``Env``: the image's, then the caller's (a key given again wins); ``WorkingDir`` and
  ``User``: the caller's if given, else the image's; ``Labels``: the image's plus the
  caller's.
- ``Volumes``: each path the image declares becomes an anonymous volume (unless the caller
  mounts something there), filled with what the image has at that path on first use; so
  does a named volume (``-v NAME:/path``) that is new or empty, unless ``nocopy``.
"""

from __future__ import annotations

import os

from kobako.errors import InvalidArgument
from kobako.runtime.containers import ContainerStore, now_rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import ImageRecord, Store
    from kobako.runtime.lifecycle import Exit
    from kobako.runtime.spec import Mount, Spec

__all__ = ["create", "find_image", "start"]

#: Names that, when not in the store, stand for the image built from the host's busybox.
DEFAULT_IMAGE_NAMES = ("docker.io/library/busybox:latest",)


def find_image(store: Store, ref: str) -> ImageRecord:
    """The image ``ref`` names; the built-in default image is made on first use.

    Raises:
        ImageNotFound: No such image (and it is not the default one).
    """
    from kobako.errors import ImageNotFound

    try:
        return store.image(ref)
    except ImageNotFound:
        from kobako.image.reference import parse

        try:
            full = str(parse(ref))
        except InvalidArgument:
            raise ImageNotFound(f"Unable to find image '{ref}' locally") from None
        if full not in DEFAULT_IMAGE_NAMES:
            raise ImageNotFound(f"Unable to find image '{ref}' locally") from None
    from kobako.image.archive import default_image

    return default_image(store)


def _merge_env(image_env: tuple[str, ...], env: tuple[str, ...]) -> tuple[str, ...]:
    merged: dict[str, str] = {}
    for item in (*image_env, *env):
        key, _, value = item.partition("=")
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


def create(
    store: Store,
    ref: str,
    spec: Spec,
    *,
    entrypoint: str | list[str] | None = None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    workdir_given: bool = False,
    auto_remove: bool = False,
    image: ImageRecord | None = None,
    restart_policy: dict[str, Any] | None = None,
    volumes_from: list[str] | None = None,
    open_stdin: bool = False,
) -> tuple[dict[str, Any], Spec]:
    """Make a container from an image: its record, its writable layer, its final spec.

    Args:
        store: The image store.
        ref: The image (name, ID or digest).
        spec: The caller's settings; ``spec.root`` is ignored, ``spec.process.args`` are the
            arguments given after the image (empty: the image's ``Cmd``).
        entrypoint: ``--entrypoint`` if given ("" or [] resets it).
        name: The container's name (random if None).
        labels: Labels added to the image's.
        workdir_given: Whether ``spec.process.cwd`` was given (else the image's applies).
        auto_remove: ``--rm`` (kept in the record).
        image: The image ``ref`` names, if the caller has already looked it up.
        restart_policy: Docker's ``RestartPolicy`` (``{"Name": "on-failure",
            "MaximumRetryCount": 3}``); see :func:`kobako.runtime.monitor.restart_policy`.
        open_stdin: ``-i``: keep its stdin open for attach clients when it runs detached.
        volumes_from: ``--volumes-from``: ``CONTAINER[:ro|:rw]``, whose volumes and bind
            mounts this one mounts too, at the same paths (read-only with ``:ro``).

    Returns:
        The container's record and the spec to run it with.

    Raises:
        ImageNotFound: No such image.
        InvalidArgument: No command (neither given nor in the image), or a bad name.
        Conflict: The name is taken.
        LayerError: A layer of the image cannot be extracted.
    """
    if image is None:
        image = find_image(store, ref)
    if volumes_from:
        spec = spec.replace(mounts=(*spec.mounts, *_volumes_from(store, spec, volumes_from)))
    layers = store.ensure_layers(image.manifest, image.config)
    cfg = image.config
    if entrypoint is not None:
        ep = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint)
        ep = [e for e in ep if e] if isinstance(entrypoint, str) else ep
        cmd = list(spec.process.args)
    else:
        ep = list(cfg.entrypoint or ())
        cmd = list(spec.process.args) or list(cfg.cmd or ())
    argv = ep + cmd
    if not argv:
        raise InvalidArgument(f"no command specified: image {ref} has no Cmd or Entrypoint")
    env = _merge_env(cfg.env, spec.process.env)
    cwd = spec.process.cwd if workdir_given else (cfg.working_dir or "/")
    user = spec.process.user or cfg.user
    all_labels = {**cfg.labels, **(labels or {})}
    config: dict[str, Any] = {
        "Hostname": spec.hostname,
        "User": user,
        "Tty": spec.process.terminal,
        "OpenStdin": open_stdin,
        "AttachStdin": open_stdin,
        "Env": list(env),
        "Cmd": cmd,
        "Entrypoint": ep or None,
        "Image": ref,
        "Volumes": {path: {} for path in cfg.volumes} or None,
        "WorkingDir": cwd if cwd != "/" or cfg.working_dir else "",
        "Labels": all_labels,
        "StopSignal": cfg.stop_signal or "SIGTERM",
    }
    host_config: dict[str, Any] = {
        "AutoRemove": auto_remove,
        "RestartPolicy": restart_policy or {"Name": "no", "MaximumRetryCount": 0},
        "NetworkMode": spec.namespaces.network,
        "PortBindings": _port_bindings(spec),
        "PublishAllPorts": False,
        "Dns": list(spec.network.dns),
        "DnsSearch": list(spec.network.dns_search),
        "DnsOptions": list(spec.network.dns_options),
        "ExtraHosts": list(spec.network.extra_hosts) or None,
        "Privileged": spec.security.privileged,
        "ReadonlyRootfs": spec.security.readonly_rootfs,
        "Binds": [f"{m.source}:{m.destination}" for m in spec.mounts if m.type == "bind"],
        "Memory": spec.resources.memory or 0,
        "PidsLimit": spec.resources.pids_limit,
        "Init": spec.process.init,
    }
    from kobako.network import initial_settings

    network_settings = initial_settings(store, spec)
    containers = ContainerStore(store)
    doc = containers.create(
        image, ref, name=name, config=config, host_config=host_config, layers=layers
    )
    try:
        doc["NetworkSettings"] = network_settings
        doc["Path"], doc["Args"] = argv[0], argv[1:]
        mounts = _mounts(store, containers, doc, cfg.volumes, spec)
    except BaseException:
        containers.remove(doc, volumes=True)
        raise
    cid = doc["Id"]
    final = spec.replace(
        root=os.path.join(containers.path(cid), "rootfs"),
        id=cid,
        hostname=spec.hostname or cid[:12],
        overlay=containers.overlay(doc),
        mounts=tuple(mounts),
        process=spec.process.replace(args=tuple(argv), env=env, cwd=cwd, user=user),
    )
    containers.save_spec(doc, final)
    return doc, final


def _mounts(
    store: Store,
    containers: ContainerStore,
    doc: dict[str, Any],
    image_volumes: tuple[str, ...],
    spec: Spec,
) -> list[Mount]:
    """The container's mounts, its volumes made and recorded in ``doc["Mounts"]``, saved.

    Each of the image's VOLUME paths the caller does not mount over gets an anonymous volume
    (first), then the caller's mounts follow in their order, a volume's turned into a bind
    of its ``_data``. A named volume is made if missing; a volume that is empty is filled
    with what the image has at its path unless ``nocopy``. The named volumes' locks are held
    until the record that names them is saved, so none is removed in between.
    """
    from kobako.runtime.spec import Mount
    from kobako.runtime.volumes import VolumeStore, copy_image_content

    volumes = VolumeStore(store)
    taken = {os.path.normpath(m.destination) for m in spec.mounts}
    wanted = [
        Mount(destination=dest, type="volume", options=("rbind", "rw", "rprivate"))
        for dest in (os.path.normpath("/" + p.lstrip("/")) for p in image_volumes)
        if dest not in taken
    ]
    wanted += spec.mounts
    named = [m.source for m in wanted if m.type == "volume" and m.source]
    records: list[dict[str, Any]] = []
    doc["Mounts"] = records  # filled as volumes are made: a failure removes anonymous ones
    out: list[Mount] = []
    with volumes.lock(*named):
        for m in wanted:
            if m.type == "bind":
                records.append(_bind_record(m))
            if m.type != "volume":
                out.append(m)
                continue
            vol, _ = volumes.create(m.source or None, anonymous=not m.source)
            data = vol["Mountpoint"]
            records.append(_volume_record(m, vol["Name"], data))
            if "nocopy" not in m.options and not os.listdir(data):
                lower = containers.overlay(doc).lower
                copy_image_content(lower, containers.path(doc["Id"]), m.destination, data)
            options = tuple(o for o in m.options if o != "nocopy")
            out.append(m.replace(type="bind", source=data, options=options))
        containers.save(doc)
    return out


def _volumes_from(store: Store, spec: Spec, refs: list[str]) -> list[Mount]:
    """The mounts ``--volumes-from`` adds: each named container's volumes and binds, at
    their paths, unless this container mounts something there itself.

    Raises:
        ContainerNotFound: A container named does not exist.
        InvalidArgument: A mode other than ``ro`` or ``rw``.
    """
    from kobako.runtime.spec import Mount

    containers = ContainerStore(store)
    taken = {os.path.normpath(m.destination) for m in spec.mounts}
    out: list[Mount] = []
    for item in refs:
        ref, _, mode = item.partition(":")
        if mode not in ("", "ro", "rw"):
            raise InvalidArgument(f"invalid mode for volumes-from: {mode}")
        for m in containers.get(ref).get("Mounts") or ():
            dest = os.path.normpath(m["Destination"])
            if dest in taken or m.get("Type") not in ("volume", "bind"):
                continue
            taken.add(dest)
            readonly = mode == "ro" or (not mode and not m.get("RW", True))
            options = ("rbind", "ro" if readonly else "rw", "rprivate")
            if m["Type"] == "volume":
                out.append(
                    Mount(
                        destination=dest,
                        type="volume",
                        source=m["Name"],
                        options=(*options, "nocopy"),
                    )
                )
            else:
                out.append(
                    Mount(destination=dest, type="bind", source=m["Source"], options=options)
                )
    return out


def _volume_record(m: Mount, name: str, data: str) -> dict[str, Any]:
    """A volume's entry in ``docker inspect``'s ``Mounts``."""
    readonly = "ro" in m.options
    words = ["ro"] if readonly else []
    words += ["nocopy"] if "nocopy" in m.options else []
    return {
        "Type": "volume",
        "Name": name,
        "Source": data,
        "Destination": m.destination,
        "Driver": "local",
        "Mode": ",".join(words),
        "RW": not readonly,
        "Propagation": "",
    }


def _bind_record(m: Mount) -> dict[str, Any]:
    """A bind mount's entry in ``docker inspect``'s ``Mounts``."""
    propagations = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
    readonly = "ro" in m.options
    return {
        "Type": "bind",
        "Source": m.source,
        "Destination": m.destination,
        "Mode": "ro" if readonly else "",
        "RW": not readonly,
        "Propagation": next((o for o in m.options if o in propagations), "rprivate"),
    }


def _port_bindings(spec: Spec) -> dict[str, list[dict[str, str]]]:
    """Docker's ``HostConfig.PortBindings`` of ``-p``/``-P``."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in spec.network.ports:
        host_ip = "" if p.host_ip == "0.0.0.0" else p.host_ip
        out.setdefault(f"{p.container_port}/{p.proto}", []).append(
            {"HostIp": host_ip, "HostPort": str(p.host_port or "")}
        )
    return out


def start(
    store: Store,
    doc: dict[str, Any],
    spec: Spec,
    *,
    stdin: int = -1,
    stdout: int = -1,
    stderr: int = -1,
    interactive: bool = False,
) -> Exit:
    """Run a created container to its end, keeping its state in its record.

    With ``HostConfig.AutoRemove`` the container (and its anonymous volumes) is removed
    afterwards, as ``docker run --rm`` does.
    """
    from kobako.runtime.lifecycle import run
    from kobako.runtime.proc import boot_id, process_start

    containers = ContainerStore(store)
    cid = doc["Id"]
    me = os.getpid()
    with containers.lock(cid):
        doc = containers.load(cid)
        state = doc["State"]
        if state.get("Status") in ("running", "paused", "restarting"):
            from kobako.errors import Conflict

            raise Conflict(f"container {cid[:12]} is already running")
        state.update(
            Status="running",
            Running=True,
            StartedAt=now_rfc3339(),
            Pid=0,
            PidStart="",
            ExitCode=0,
            Error="",
            ManualStop=False,
            # the kobako process that waits for it: the record says running while it lives
            MonitorPid=me,
            MonitorStart=process_start(me),
            BootId=boot_id(),
        )
        containers.save(doc)

    def started(pid: int, network: dict[str, Any]) -> None:
        from kobako.network import running_settings

        with containers.lock(cid):
            current = containers.load(cid)
            current["State"].update(Pid=pid, PidStart=process_start(pid))
            running_settings(current, network)
            containers.save(current)

    try:
        from kobako.network import for_start

        spec = for_start(store, doc, spec)
    except BaseException as e:
        _finish(containers, cid, Status="created", ExitCode=125, Error=str(e))
        raise

    try:
        result = run(
            spec,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            interactive=interactive,
            on_start=started,
        )
    except BaseException as e:
        _finish(
            containers,
            cid,
            Status="exited" if not isinstance(e, InvalidArgument) else "created",
            ExitCode=getattr(e, "exit_code", 125),
            Error=str(e),
        )
        raise
    _finish(containers, cid, Status="exited", ExitCode=result.status, OOMKilled=result.oom_killed)
    return result


def _finish(containers: ContainerStore, cid: str, **state: Any) -> None:
    """Record how a foreground run ended (or remove the container, with ``--rm``)."""
    with containers.lock(cid):
        doc = containers.load(cid)
        # MonitorPid 0: this process, which may live on (the API), no longer watches it
        doc["State"].update(state, Running=False, Pid=0, MonitorPid=0, FinishedAt=now_rfc3339())
        from kobako.network import stopped_settings

        stopped_settings(doc)
        if doc["HostConfig"].get("AutoRemove"):
            containers.remove(doc, volumes=True)
        else:
            containers.save(doc)


def changes(store: Store, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The container's changes to its image, as ``docker diff`` lists them: (kind, path).

    ``A`` added, ``C`` changed, ``D`` deleted, sorted by path. Read from the writable layer:
    a 0:0 character device is a deletion, anything else is a change when a layer below has
    that path and an addition when none does.
    """
    import stat

    containers = ContainerStore(store)
    overlay = containers.overlay(doc)
    upper = overlay.upper

    def in_lower(rel: str) -> bool:
        return any(os.path.lexists(os.path.join(layer, rel)) for layer in overlay.lower)

    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, upper)
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(("D", "/" + rel))
            else:
                out.append(("C" if in_lower(rel) else "A", "/" + rel))
    out.sort(key=lambda item: item[1])
    return out


def commit(
    store: Store,
    doc: dict[str, Any],
    reference: str | None = None,
    *,
    message: str = "",
    author: str = "",
    changes_: list[str] | None = None,
) -> ImageRecord:
    """A new image from a container: its image's layers plus one made from its changes.

    The writable layer is packed as a gzip tar with overlayfs's whiteouts turned back into
    OCI ones; the new config is the container's config (with ``--change`` instructions
    applied), with the layer's diff ID and a history entry added.

    Raises:
        ContainerNotFound: The container is gone.
        InvalidArgument: A bad reference or change.
    """
    from kobako import _native
    from kobako.image import manifest as m

    if reference is not None:
        from kobako.image.reference import parse

        parse(reference)  # fail before the work
    containers = ContainerStore(store)
    base = store.manifest(doc["ImageManifest"])
    base_config = store.read_blob(base.config.digest)
    parsed_base = m.parse_config(base_config)
    raw = dict(parsed_base.raw)
    config = dict(raw.get("config") or {})
    c = doc["Config"]
    config.update(
        {
            "Env": c.get("Env") or [],
            "Cmd": c.get("Cmd") or None,
            "Entrypoint": c.get("Entrypoint"),
            "WorkingDir": c.get("WorkingDir") or "",
            "User": c.get("User") or "",
            "Labels": c.get("Labels") or None,
        }
    )
    if changes_:
        from kobako.image.archive import apply_changes

        config = apply_changes(config, changes_)
    with store.stage() as stage:
        tmp = os.path.join(stage.path, "commit-layer")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            digest, diff_id, size = _native.pack_layer(
                containers.overlay(doc).upper, fd, compression="gzip", overlay_whiteouts=True
            )
        finally:
            os.close(fd)
        with open(tmp, "rb") as f:
            layer = stage.add_blob(f, digest)
        chain = m.chain_ids([*parsed_base.diff_ids, diff_id])[-1]
        stage.add_layer(layer.digest, diff_id, chain)
        created = now_rfc3339()
        history = list(raw.get("history") or [])
        history.append(
            {
                "created": created,
                "created_by": " ".join([doc.get("Path", ""), *doc.get("Args", [])]).strip(),
                **({"comment": message} if message else {}),
                **({"author": author} if author else {}),
            }
        )
        raw.update(
            {
                "created": created,
                "config": config,
                "history": history,
                "rootfs": {"type": "layers", "diff_ids": [*parsed_base.diff_ids, diff_id]},
            }
        )
        if author:
            raw["author"] = author
        cfg = stage.add_blob(m.canonical(raw))
        layers = [*base.layers, m.Descriptor(digest=digest, size=size, media_type=m.OCI_LAYER_GZIP)]
        manifest = stage.add_blob(
            m.manifest_json(
                m.Descriptor(digest=cfg.digest, size=cfg.size, media_type=m.OCI_CONFIG), layers
            )
        )
        stage.commit(manifest_digest=manifest.digest, tags=[reference] if reference else [])
    return store.image(manifest.digest)


def export(store: Store, doc: dict[str, Any], out_fd: int) -> None:
    """Write the container's root filesystem, flattened, as a tar to ``out_fd``."""
    from kobako import _native
    from kobako.runtime.mounts import merged_view

    containers = ContainerStore(store)
    overlay = containers.overlay(doc)
    with merged_view((overlay.upper, *overlay.lower), containers.path(doc["Id"])) as view:
        _native.pack_layer(view, out_fd)
