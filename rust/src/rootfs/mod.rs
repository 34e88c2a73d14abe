//! The container's root filesystem, assembled in the child: mounts resolved inside the rootfs,
//! device nodes, links, pivot_root, masked and read-only paths.
//!
//! Every path inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT), so a symlink in the
//! image can never send a mount or a new node outside it; the mount itself then targets
//! `/proc/self/fd/N` (as runc does). No function here allocates.

use std::ffi::{CStr, CString};
use std::ptr;

use libc::{c_char, c_int, c_ulong};

use crate::error::Step;
use crate::process::plan::{Kind, MountEntry, RootPath};
use crate::sys;

/// A failed step: which one, and its errno.
pub type Failure = (Step, c_int);

fn fail<T>(step: Step) -> Result<T, Failure> {
    Err((step, sys::errno()))
}

/// Create the missing components of a path inside `root`: directories, and the last one as
/// `kind`. An existing component is left as it is (a symlink is followed, inside `root`).
fn create_missing(root: c_int, prefixes: &[CString], names: &[CString], kind: Kind) -> Result<(), Failure> {
    let n = prefixes.len();
    for i in 0..n {
        // SAFETY: prefixes are NUL-terminated.
        let fd = unsafe { sys::open_in_root(root, prefixes[i].as_ptr(), libc::O_PATH) };
        if fd >= 0 {
            // SAFETY: closing an fd we own.
            unsafe { libc::close(fd) };
            continue;
        }
        if sys::errno() != libc::ENOENT {
            return fail(Step::MountTarget);
        }
        let parent = if i == 0 {
            // SAFETY: dup of a valid fd.
            unsafe { libc::fcntl(root, libc::F_DUPFD_CLOEXEC, 0) }
        } else {
            // SAFETY: NUL-terminated prefix.
            unsafe { sys::open_in_root(root, prefixes[i - 1].as_ptr(), libc::O_PATH | libc::O_DIRECTORY) }
        };
        if parent < 0 {
            return fail(Step::MountTarget);
        }
        let name = names[i].as_ptr();
        // SAFETY: parent is a directory fd, name a single NUL-terminated component.
        let rc = unsafe {
            if i + 1 == n && kind == Kind::File {
                let f = libc::openat(
                    parent,
                    name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                );
                if f >= 0 {
                    libc::close(f);
                }
                f
            } else {
                libc::mkdirat(parent, name, 0o755)
            }
        };
        let err = sys::errno();
        // SAFETY: closing an fd we own.
        unsafe { libc::close(parent) };
        if rc < 0 && err != libc::EEXIST {
            return Err((Step::MountTarget, err));
        }
    }
    Ok(())
}

/// Open `path` inside `root` as an O_PATH fd, creating it (and its parents) if missing.
pub fn ensure(root: c_int, path: &RootPath, kind: Kind) -> Result<c_int, Failure> {
    // SAFETY: relative is NUL-terminated; root is a valid directory fd.
    let fd = unsafe { sys::open_in_root(root, path.relative.as_ptr(), libc::O_PATH) };
    if fd >= 0 {
        return Ok(fd);
    }
    if sys::errno() != libc::ENOENT {
        return fail(Step::MountTarget);
    }
    create_missing(root, &path.prefixes, &path.names, kind)?;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { sys::open_in_root(root, path.relative.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return fail(Step::MountTarget);
    }
    Ok(fd)
}

/// The mount flags a bind remount must keep: those the kernel locks on the mount.
fn locked_flags(fd: c_int) -> c_ulong {
    // SAFETY: statvfs is plain old data; fstatvfs fills it for a valid fd.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(fd, &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag as c_ulong;
    let mut out = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms_flag;
        }
    }
    out
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// Apply one mount entry inside `root`.
pub fn mount(root: c_int, m: &MountEntry) -> Result<(), Failure> {
    let fd = ensure(root, &m.target, m.kind)?;
    let mut buf = [0u8; 32];
    let target = sys::proc_fd_path(fd, &mut buf);
    let mut flags = m.flags;
    let remount = flags & libc::MS_REMOUNT != 0;
    if remount && flags & libc::MS_BIND != 0 {
        flags |= locked_flags(fd);
    }
    // SAFETY: every pointer is NUL-terminated or null; target names our own fd.
    let rc = unsafe {
        libc::mount(
            opt_ptr(&m.source),
            target,
            opt_ptr(&m.fstype),
            flags,
            opt_ptr(&m.data) as *const libc::c_void,
        )
    };
    let err = sys::errno();
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
    if rc != 0 && err == libc::EPERM && m.fstype.as_deref() == Some(c"sysfs") {
        return bind_host_sys(root, m);
    }
    if rc != 0 {
        return Err((if remount { Step::Remount } else { Step::Mount }, err));
    }
    Ok(())
}

/// In a user namespace whose network namespace belongs to another user namespace (a network
/// made before the clone, in the host's), the kernel refuses a new sysfs: bind the host's
/// instead, as runc does, then remount it with the flags asked for (read-only...).
fn bind_host_sys(root: c_int, m: &MountEntry) -> Result<(), Failure> {
    let bind = |flags: libc::c_ulong, source: *const libc::c_char, step: Step| -> Result<(), Failure> {
        let fd = ensure(root, &m.target, m.kind)?;
        let mut buf = [0u8; 32];
        let target = sys::proc_fd_path(fd, &mut buf);
        let flags = if flags & libc::MS_REMOUNT != 0 { flags | locked_flags(fd) } else { flags };
        // SAFETY: source is static or null, target names our own fd.
        let rc = unsafe { libc::mount(source, target, std::ptr::null(), flags, std::ptr::null()) };
        let err = sys::errno();
        // SAFETY: closing an fd we own.
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err((step, err));
        }
        Ok(())
    };
    bind(libc::MS_BIND | libc::MS_REC, c"/sys".as_ptr(), Step::Mount)?;
    let keep = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if m.flags & keep != 0 {
        // a new fd: the first one holds the directory under the bind
        bind(libc::MS_BIND | libc::MS_REMOUNT | (m.flags & keep), std::ptr::null(), Step::Remount)?;
    }
    Ok(())
}

/// Create a device node inside `root` (its parent directories too).
pub fn mknod(root: c_int, path: &RootPath, mode: u32, major: u32, minor: u32) -> Result<(), Failure> {
    let (name, parent) = split_parent(root, path, Step::Mknod)?;
    // SAFETY: parent is a directory fd and name one component.
    let rc = unsafe { libc::mknodat(parent, name, mode, libc::makedev(major, minor)) };
    let err = sys::errno();
    // SAFETY: closing an fd we own.
    unsafe { libc::close(parent) };
    if rc != 0 && err != libc::EEXIST {
        return Err((Step::Mknod, err));
    }
    Ok(())
}

/// Create a symlink at `path` (inside `root`) pointing at `target`.
pub fn symlink(root: c_int, target: &CStr, path: &RootPath) -> Result<(), Failure> {
    let (name, parent) = split_parent(root, path, Step::Symlink)?;
    // SAFETY: target and name are NUL-terminated; parent is a directory fd.
    let rc = unsafe { libc::symlinkat(target.as_ptr(), parent, name) };
    let err = sys::errno();
    // SAFETY: closing an fd we own.
    unsafe { libc::close(parent) };
    if rc != 0 && err != libc::EEXIST {
        return Err((Step::Symlink, err));
    }
    Ok(())
}

/// The last component of `path` and an fd of its parent directory (created if missing).
fn split_parent(root: c_int, path: &RootPath, step: Step) -> Result<(*const c_char, c_int), Failure> {
    let n = path.prefixes.len();
    if n == 0 {
        return Err((step, libc::EINVAL));
    }
    let parent = if n == 1 {
        // SAFETY: dup of a valid fd.
        unsafe { libc::fcntl(root, libc::F_DUPFD_CLOEXEC, 0) }
    } else {
        create_missing(root, &path.prefixes[..n - 1], &path.names[..n - 1], Kind::Dir)
            .map_err(|(_, e)| (step, e))?;
        // SAFETY: NUL-terminated prefix.
        unsafe { sys::open_in_root(root, path.prefixes[n - 2].as_ptr(), libc::O_PATH | libc::O_DIRECTORY) }
    };
    if parent < 0 {
        return fail(step);
    }
    Ok((path.names[n - 1].as_ptr(), parent))
}

/// Make `rootfs` the root: bind it onto itself, pivot_root into it, detach the old root.
///
/// `root` is an O_PATH fd of the rootfs bind mount.
pub fn pivot(root: c_int) -> Result<(), Failure> {
    let dot = c".".as_ptr();
    // SAFETY: root is a directory fd; "." is NUL-terminated.
    unsafe {
        if libc::fchdir(root) != 0 {
            return fail(Step::PivotRoot);
        }
        // pivot_root(".", ".") stacks the old root on top of the new one; unmount it lazily.
        if sys::pivot_root(dot, dot) != 0 {
            return fail(Step::PivotRoot);
        }
        if libc::umount2(dot, libc::MNT_DETACH) != 0 {
            return fail(Step::PivotRoot);
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return fail(Step::PivotRoot);
        }
    }
    Ok(())
}

/// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
/// A path that does not exist is skipped, as runc does.
pub fn mask(path: &CStr) -> Result<(), Failure> {
    let path = path.as_ptr();
    // SAFETY: stat is plain old data; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(path, &mut st) } != 0 {
        return if sys::errno() == libc::ENOENT { Ok(()) } else { fail(Step::MaskPath) };
    }
    // SAFETY: all strings are NUL-terminated.
    let rc = unsafe {
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            libc::mount(
                c"tmpfs".as_ptr(),
                path,
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                c"size=0k".as_ptr() as *const libc::c_void,
            )
        } else {
            libc::mount(c"/dev/null".as_ptr(), path, ptr::null(), libc::MS_BIND, ptr::null())
        }
    };
    if rc != 0 {
        return fail(Step::MaskPath);
    }
    Ok(())
}

/// Remount the mount at `path` read-only, keeping the flags the kernel locks on it.
fn remount_readonly(path: &CStr, step: Step) -> Result<(), Failure> {
    // SAFETY: path is NUL-terminated; null pointers are allowed for the unused arguments.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        let keep = if fd >= 0 { locked_flags(fd) } else { 0 };
        if fd >= 0 {
            libc::close(fd);
        }
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep;
        if libc::mount(ptr::null(), path.as_ptr(), ptr::null(), flags, ptr::null()) != 0 {
            return fail(step);
        }
    }
    Ok(())
}

/// Make a path read-only by bind-mounting it onto itself and remounting; missing is skipped.
pub fn readonly(path: &CStr, step: Step) -> Result<(), Failure> {
    let p = path.as_ptr();
    // SAFETY: path is NUL-terminated; null pointers are allowed for the unused arguments.
    if unsafe { libc::mount(p, p, ptr::null(), libc::MS_BIND | libc::MS_REC, ptr::null()) } != 0 {
        return if sys::errno() == libc::ENOENT { Ok(()) } else { fail(step) };
    }
    remount_readonly(path, step)
}

/// Remount the (already pivoted) root read-only.
pub fn readonly_root() -> Result<(), Failure> {
    remount_readonly(c"/", Step::ReadonlyRootfs)
}

/// Read at most `limit` bytes of `path`, resolved inside `root`; `None` if it does not exist.
pub fn read_in_root(root: &str, path: &str, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let to_c = |s: &str| CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    let root_c = to_c(root)?;
    let rel = to_c(path.trim_start_matches('/'))?;
    // SAFETY: NUL-terminated path; the fd is owned below.
    let rootfd = unsafe { libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if rootfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: rootfd was just opened and is ours.
    let rootfd = unsafe { OwnedFd::from_raw_fd(rootfd) };
    // SAFETY: NUL-terminated path, valid directory fd.
    let fd = unsafe { sys::open_in_root(rootfd.as_raw_fd(), rel.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(err) };
    }
    // SAFETY: fd was just opened and is ours.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut data = Vec::new();
    file.take(limit as u64).read_to_end(&mut data)?;
    Ok(Some(data))
}
