//! The launch plan: everything the child needs, computed in the parent before clone.
//!
//! The child may not allocate, so every string is a `CString` here and every path inside the
//! container is pre-split into the prefixes the child walks to create it.

use std::ffi::CString;

use libc::{c_char, c_ulong};

use crate::error::{Error, Result};

/// Whether a mount target is created as a directory or as an empty file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A path inside the container, relative to its root, ready for the child to resolve.
#[derive(Debug)]
pub struct RootPath {
    /// As given, absolute (`/etc/hosts`): for error messages and after pivot_root.
    pub absolute: CString,
    /// Without the leading slash (`etc/hosts`), or `.` for the root itself.
    pub relative: CString,
    /// Relative prefixes: `etc`, `etc/hosts`.
    pub prefixes: Vec<CString>,
    /// The last component of each prefix: `etc`, `hosts`.
    pub names: Vec<CString>,
}

impl RootPath {
    pub fn new(path: &str) -> Result<RootPath> {
        if !path.starts_with('/') {
            return Err(Error::Plan(format!("container path {path:?} is not absolute")));
        }
        let mut prefixes = Vec::new();
        let mut names = Vec::new();
        let mut prefix = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if comp == ".." {
                return Err(Error::Plan(format!("container path {path:?} contains '..'")));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            prefixes.push(cstring(&prefix)?);
            names.push(cstring(comp)?);
        }
        let relative = if prefix.is_empty() { ".".to_string() } else { prefix };
        Ok(RootPath { absolute: cstring(path)?, relative: cstring(&relative)?, prefixes, names })
    }

    pub fn display(&self) -> String {
        self.absolute.to_string_lossy().into_owned()
    }
}

/// One mount, applied in order before pivot_root; the target is inside the rootfs.
#[derive(Debug)]
pub struct MountEntry {
    pub source: Option<CString>,
    pub target: RootPath,
    pub fstype: Option<CString>,
    pub flags: c_ulong,
    pub data: Option<CString>,
    pub kind: Kind,
}

/// A device node created in the container's /dev.
#[derive(Debug)]
pub struct Device {
    pub path: RootPath,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
}

/// The capability sets to leave the process with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    /// Highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub last_cap: u32,
}

/// An overlayfs to mount at the rootfs path first, inside the container's mount namespace.
#[derive(Debug)]
pub struct Overlay {
    /// `lowerdir=…,upperdir=…,workdir=…` (at most a page: the kernel's limit).
    pub data: CString,
    /// Directory to chdir into first, when the paths in `data` are relative to it (which is
    /// how many layers fit in one page).
    pub chdir: Option<CString>,
}

/// What `exec` joins instead of making a container: a running container's namespaces and root.
#[derive(Debug)]
pub struct Join {
    /// (namespace fd, CLONE_NEW* type) for every namespace but the pid one, the user
    /// namespace first: the child setns()es into each.
    pub namespaces: Vec<(i32, i32)>,
    /// The container's pid namespace, which the parent enters around the clone (setns only
    /// moves the children of the caller into a pid namespace); -1: none to join.
    pub pid_ns: i32,
    /// An O_PATH fd of the container's root (`/proc/PID/root`), to chroot into.
    pub root: i32,
}

/// Everything the child does, decided by the parent.
#[derive(Debug)]
pub struct Plan {
    pub rootfs: CString,
    pub overlay: Option<Overlay>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Candidate absolute paths for argv[0] (PATH lookup done in the parent).
    pub exec_paths: Vec<CString>,
    pub cwd: RootPath,
    pub hostname: Option<CString>,
    /// CLONE_NEW* flags (CLONE_NEWCGROUP is handled by the launcher).
    pub namespaces: u64,
    pub uid_map: Option<String>,
    pub gid_map: Option<String>,
    pub mounts: Vec<MountEntry>,
    pub devices: Vec<Device>,
    /// (link target, link path)
    pub symlinks: Vec<(CString, RootPath)>,
    pub masked_paths: Vec<CString>,
    pub readonly_paths: Vec<CString>,
    pub readonly_rootfs: bool,
    /// (resource, soft, hard); u64::MAX is unlimited.
    pub rlimits: Vec<(u32, u64, u64)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub caps: Caps,
    pub no_new_privs: bool,
    /// A compiled BPF program (`struct sock_filter[]`), or None for no seccomp.
    pub seccomp: Option<Vec<u8>>,
    /// The pty slave to make the controlling terminal and stdio, if any.
    pub tty_fd: i32,
    /// Fds to become 0, 1, 2 (-1: keep the parent's).
    pub stdio: [i32; 3],
    /// v2: the cgroup dir fd for CLONE_INTO_CGROUP (-1: none).
    pub cgroup_fd: i32,
    /// Files the child writes `0` (itself) into to join its cgroup when it was not cloned
    /// into it (v1 `tasks` files; v2 `cgroup.procs` where clone3 is missing).
    pub cgroup_join: Vec<CString>,
    /// Run a reaping, signal-forwarding init as PID 1.
    pub init: bool,
    /// `exec`: join a running container instead of setting one up (no mounts, no pivot).
    pub join: Option<Join>,
    /// A network namespace (fd) to start in, entered by the parent's thread around the clone
    /// so that it holds also under a new user namespace; -1: none.
    pub netns: i32,
}

pub fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Plan(format!("{s:?} contains a NUL byte")))
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
pub fn pointer_array(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_path_splits_prefixes() {
        let p = RootPath::new("/etc//ssl/./certs/").unwrap();
        let prefixes: Vec<_> = p.prefixes.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(prefixes, ["etc", "etc/ssl", "etc/ssl/certs"]);
        let names: Vec<_> = p.names.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(names, ["etc", "ssl", "certs"]);
        assert_eq!(p.relative.to_str().unwrap(), "etc/ssl/certs");
        assert_eq!(RootPath::new("/").unwrap().relative.to_str().unwrap(), ".");
    }

    #[test]
    fn root_path_rejects_escapes() {
        assert!(RootPath::new("etc").is_err());
        assert!(RootPath::new("/a/../../b").is_err());
        assert!(RootPath::new("/a\0b").is_err());
    }
}
