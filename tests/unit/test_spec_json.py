"""A container's spec, kept as JSON with its record, reads back as the same spec."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument
from kobako.runtime.spec import (
    IdMap,
    Mount,
    Namespaces,
    Overlay,
    Process,
    Resources,
    Rlimit,
    Security,
    Spec,
    from_json,
    to_json,
)

text = st.text(max_size=12)
texts = st.lists(text, max_size=3).map(tuple)
maybe_int = st.none() | st.integers(-1, 1 << 40)
idmaps = st.lists(
    st.builds(IdMap, container_id=st.integers(0, 65535), host_id=st.integers(0, 1 << 31),
              size=st.integers(1, 65536)),
    max_size=2,
).map(tuple)  # fmt: skip

specs = st.builds(
    Spec,
    root=text,
    process=st.builds(
        Process,
        args=texts,
        env=texts,
        cwd=text,
        user=text,
        terminal=st.booleans(),
        rlimits=st.lists(
            st.builds(Rlimit, type=text, soft=st.integers(-1, 99), hard=st.integers(-1, 99)),
            max_size=2,
        ).map(tuple),
        init=st.booleans(),
    ),
    hostname=text,
    mounts=st.lists(
        st.builds(Mount, destination=text, type=text, source=text, options=texts), max_size=3
    ).map(tuple),
    namespaces=st.builds(
        Namespaces,
        network=st.sampled_from(["none", "host"]),
        pid=st.booleans(),
        ipc=st.booleans(),
        uts=st.booleans(),
        cgroup=st.booleans(),
        uid_map=idmaps,
        gid_map=idmaps,
    ),
    resources=st.builds(
        Resources,
        memory=maybe_int,
        memory_swap=maybe_int,
        memory_reservation=maybe_int,
        nano_cpus=maybe_int,
        cpu_shares=maybe_int,
        cpuset_cpus=st.none() | text,
        pids_limit=maybe_int,
    ),
    security=st.builds(
        Security,
        privileged=st.booleans(),
        cap_add=texts,
        cap_drop=texts,
        seccomp=st.none() | text,
        no_new_privileges=st.booleans(),
        readonly_rootfs=st.booleans(),
    ),
    id=text,
    overlay=st.none() | st.builds(Overlay, lower=texts, upper=text, work=text),
)


@given(specs)
def test_round_trip_through_json_text(spec: Spec) -> None:
    assert from_json(json.loads(json.dumps(to_json(spec)))) == spec


@pytest.mark.parametrize("doc", [{}, {"root": "/"}, {"process": []}])
def test_rejects_what_is_not_a_spec(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match="not a kobako container spec"):
        from_json(doc)
