#!/bin/sh
# Install the peers the benchmarks measure kobako against (Debian packages) and make them run
# on this host. Idempotent: it installs only what is missing and changes nothing that works.
#
#   sudo benches/setup.sh
#
# The one host change it may make: crun 1.8 refuses to run on a hybrid cgroup layout whose
# cgroup2 mount holds a controller ("cgroups in hybrid mode not supported, drop all controllers
# from cgroupv2"). Only when crun fails with exactly that error, it mounts a new cgroup v1
# hierarchy for hugetlb, which moves that controller off the cgroup2 mount. That adds a
# hierarchy; it unmounts and rebinds nothing of the host's. Undo (when no cgroup uses it):
# umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
set -eu

PACKAGES="runc crun busybox-static"

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages and runs containers)" >&2
    exit 1
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
    echo "setup.sh: $PACKAGES already installed"
fi

# Probe: run /bin/true with crun on a one-binary bundle.
probe=$(mktemp -d /tmp/kobako-setup.XXXXXX)
trap 'rm -rf "$probe"' EXIT
mkdir -p "$probe/rootfs/bin"
cp /bin/busybox "$probe/rootfs/bin/busybox"
ln -s busybox "$probe/rootfs/bin/true"
(cd "$probe" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"\/bin\/true"/' "$probe/config.json"

crun_probe() {
    crun run -b "$probe" "kobako-setup-$$" </dev/null >/dev/null 2>"$probe/err"
}

if crun_probe; then
    echo "setup.sh: crun runs containers on this host"
elif grep -q "cgroups in hybrid mode not supported" "$probe/err"; then
    echo "setup.sh: crun refuses this hybrid cgroup layout: $(cat "$probe/err")"
    echo "setup.sh: mounting a cgroup v1 hierarchy for hugetlb at /sys/fs/cgroup/hugetlb" \
        "(adds a hierarchy; unmounts nothing)"
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    if crun_probe; then
        echo "setup.sh: crun runs containers now"
    else
        echo "setup.sh: crun still fails: $(cat "$probe/err")" >&2
        exit 1
    fi
else
    echo "setup.sh: crun fails: $(cat "$probe/err")" >&2
    exit 1
fi

if runc run -b "$probe" "kobako-setup-$$" </dev/null >/dev/null 2>"$probe/err"; then
    echo "setup.sh: runc runs containers on this host"
else
    echo "setup.sh: runc fails: $(cat "$probe/err")" >&2
    exit 1
fi
