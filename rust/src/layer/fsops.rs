//! The *at() system calls the extractor makes, each relative to a directory fd.
//!
//! Names passed to the `Dir` methods are single components (no `/`); multi-component paths go
//! only through openat2 with RESOLVE_IN_ROOT, so nothing here resolves outside the layer root.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::strerror;
use crate::sys::{errno, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};

use super::Meta;

const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// How openat2 may resolve a multi-component path below the layer root.
#[derive(Clone, Copy)]
pub(super) enum Resolve {
    /// Symlinks are followed, but `/` and `..` stop at the layer root.
    InRoot,
    /// No symlink may be crossed at all (whiteouts and opaque markers).
    NoSymlinks,
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// An open directory (O_RDONLY, so xattrs, modes and times can be set through it).
pub(super) struct Dir {
    pub(super) fd: OwnedFd,
    /// Whether the directory is setgid (what it creates takes its group), once asked.
    setgid: Cell<Option<bool>>,
}

fn os_err(what: &str, name: &[u8]) -> String {
    format!("{what} {}: {}", String::from_utf8_lossy(name), strerror(errno()))
}

fn check(rc: libc::c_int, what: &str, name: &[u8]) -> Result<(), String> {
    if rc < 0 {
        Err(os_err(what, name))
    } else {
        Ok(())
    }
}

impl Dir {
    fn new(fd: OwnedFd) -> Dir {
        Dir { fd, setgid: Cell::new(None) }
    }

    /// Whether what is created here takes this directory's group rather than the creator's.
    pub(super) fn is_setgid(&self) -> Result<bool, String> {
        if let Some(setgid) = self.setgid.get() {
            return Ok(setgid);
        }
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: st is a valid out pointer for an fd we hold.
        check(unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) }, "stat", b".")?;
        let setgid = st.st_mode & libc::S_ISGID != 0;
        self.setgid.set(Some(setgid));
        Ok(setgid)
    }

    /// Open the target directory itself, once.
    pub(super) fn open_root(path: &Path) -> std::io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: c is NUL-terminated; the fd returned is owned by us.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        Ok(Dir::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Open the directory at `path` (components joined by `/`, empty for the root itself),
    /// resolved with this directory as `/`.
    pub(super) fn open_dir(&self, path: &[u8], resolve: Resolve) -> Result<Dir, String> {
        let path = if path.is_empty() { b"." as &[u8] } else { path };
        let c = CString::new(path).map_err(|_| "name contains a NUL byte".to_string())?;
        let mut flags = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        if let Resolve::NoSymlinks = resolve {
            flags |= RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: flags,
        };
        // SAFETY: c is NUL-terminated and how is a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        } as RawFd;
        if fd < 0 {
            let e = errno();
            let reason = match (resolve, e) {
                (Resolve::NoSymlinks, libc::ELOOP) => "crosses a symlink".to_string(),
                _ => strerror(e),
            };
            return Err(format!("open directory {}: {reason}", String::from_utf8_lossy(path)));
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        Ok(Dir::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Open the child directory `name`, never through a symlink.
    pub(super) fn open_child_dir(&self, name: &CStr) -> Result<Dir, String> {
        // SAFETY: name is NUL-terminated; the fd returned is owned by us.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(os_err("open directory", name.to_bytes()));
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        Ok(Dir::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// mkdirat(name, mode): false if the name is taken (by anything, even a symlink).
    pub(super) fn mkdir(&self, name: &CStr, mode: u32) -> Result<bool, String> {
        // SAFETY: name is NUL-terminated.
        let rc = unsafe { libc::mkdirat(self.fd.as_raw_fd(), name.as_ptr(), mode) };
        if rc < 0 {
            if errno() == libc::EEXIST {
                return Ok(false);
            }
            return Err(os_err("mkdir", name.to_bytes()));
        }
        Ok(true)
    }

    /// Create a new regular file with `mode` (less the umask); None if the name is taken (a
    /// symlink there is not followed).
    pub(super) fn create_file(&self, name: &CStr, mode: u32) -> Result<Option<OwnedFd>, String> {
        // SAFETY: name is NUL-terminated; the fd returned is owned by us.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            if errno() == libc::EEXIST {
                return Ok(None);
            }
            return Err(os_err("create", name.to_bytes()));
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Remove what exists at `name` (the link itself for a symlink; a whole tree for a
    /// directory, unless `keep_dir`).
    pub(super) fn remove_existing(&self, name: &CStr, keep_dir: bool) -> Result<(), String> {
        let Some(st) = self.lstat(name)? else {
            return Ok(());
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if keep_dir {
                return Ok(());
            }
            return self.remove_tree(name);
        }
        // SAFETY: name is NUL-terminated.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) }, "unlink", name.to_bytes())
    }

    /// Whether new entries here get a default ACL rather than the umask.
    pub(super) fn has_default_acl(&self) -> bool {
        // SAFETY: the key is NUL-terminated; a null buffer of size 0 only asks for the size.
        let n = unsafe {
            libc::fgetxattr(
                self.fd.as_raw_fd(),
                c"system.posix_acl_default".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        n > 0
    }

    pub(super) fn is_symlink(&self, name: &CStr) -> Result<bool, String> {
        Ok(self.lstat(name)?.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK))
    }

    fn lstat(&self, name: &CStr) -> Result<Option<libc::stat>, String> {
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: name is NUL-terminated and st is a valid out pointer.
        let rc =
            unsafe { libc::fstatat(self.fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc < 0 {
            if errno() == libc::ENOENT {
                return Ok(None);
            }
            return Err(os_err("stat", name.to_bytes()));
        }
        Ok(Some(st))
    }

    /// The names in this directory (without `.` and `..`), in the order readdir gives them.
    pub(super) fn list(&self) -> Result<Vec<CString>, String> {
        // SAFETY: dup of a valid fd; fdopendir takes ownership of the duplicate.
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(os_err("dup", b""));
        }
        // SAFETY: dup is a valid directory fd, owned by the DIR stream from here on.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            // SAFETY: fdopendir failed, so dup is still ours to close.
            unsafe { libc::close(dup) };
            return Err(os_err("opendir", b""));
        }
        let mut names = Vec::new();
        loop {
            // readdir returns NULL both at the end and on error; only errno tells them apart.
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dirp is a valid open DIR stream.
            let ent = unsafe { libc::readdir64(dirp) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is a NUL-terminated array inside a valid dirent.
            let n = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                names.push(n.to_owned());
            }
        }
        let failed = errno();
        // SAFETY: dirp is valid and closed once.
        unsafe { libc::closedir(dirp) };
        if failed != 0 {
            return Err(format!("readdir: {}", strerror(failed)));
        }
        Ok(names)
    }

    fn remove_tree(&self, name: &CStr) -> Result<(), String> {
        let child = self.open_child_dir(name)?;
        for n in child.list()? {
            child.remove_existing(&n, false)?;
        }
        // SAFETY: name is NUL-terminated.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
        check(rc, "rmdir", name.to_bytes())
    }

    pub(super) fn mknod(&self, name: &CStr, fmt: libc::mode_t, dev: libc::dev_t) -> Result<(), String> {
        // SAFETY: name is NUL-terminated.
        let rc = unsafe { libc::mknodat(self.fd.as_raw_fd(), name.as_ptr(), fmt, dev) };
        check(rc, "mknod", name.to_bytes())
    }

    pub(super) fn symlink(&self, target: &CStr, name: &CStr) -> Result<(), String> {
        // SAFETY: both strings are NUL-terminated.
        let rc = unsafe { libc::symlinkat(target.as_ptr(), self.fd.as_raw_fd(), name.as_ptr()) };
        check(rc, "symlink", name.to_bytes())
    }

    /// fchownat without following a symlink at `name`.
    pub(super) fn chown(&self, name: &CStr, uid: u32, gid: u32) -> Result<(), String> {
        // SAFETY: name is NUL-terminated.
        let rc = unsafe {
            libc::fchownat(self.fd.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
        };
        check(rc, "chown", name.to_bytes())
    }

    /// chmod of a device node or fifo just created here (not a symlink, so following is moot).
    pub(super) fn chmod_special(&self, name: &CStr, mode: u32) -> Result<(), String> {
        // SAFETY: name is NUL-terminated.
        let rc = unsafe { libc::fchmodat(self.fd.as_raw_fd(), name.as_ptr(), mode, 0) };
        check(rc, "chmod", name.to_bytes())
    }

    pub(super) fn set_mtime_nofollow(&self, name: &CStr, mtime: i64) -> Result<(), String> {
        let t = [timespec(mtime), timespec(mtime)];
        // SAFETY: name is NUL-terminated and t holds two timespecs.
        let rc = unsafe {
            libc::utimensat(self.fd.as_raw_fd(), name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        };
        check(rc, "utimensat", name.to_bytes())
    }

    pub(super) fn set_xattr_fd(&self, key: &CStr, value: &[u8]) -> Result<(), String> {
        set_xattr(self.fd.as_raw_fd(), key, value)
    }
}

fn timespec(secs: i64) -> libc::timespec {
    libc::timespec { tv_sec: secs, tv_nsec: 0 }
}

fn set_xattr(fd: RawFd, key: &CStr, value: &[u8]) -> Result<(), String> {
    // SAFETY: key is NUL-terminated; value is a valid buffer of the given length.
    let rc = unsafe { libc::fsetxattr(fd, key.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check(rc, "setxattr", key.to_bytes())
}

/// Ownership, then xattrs (chown drops security.capability), then mode (chown drops setuid).
/// `created` says what creating the inode already gave it, which is then not set again.
pub(super) fn set_meta_fd(fd: RawFd, meta: &Meta, created: Created) -> Result<(), String> {
    if !created.owner {
        // SAFETY: plain integer arguments on an fd we hold.
        check(unsafe { libc::fchown(fd, meta.uid, meta.gid) }, "chown", b"")?;
    }
    for (key, value) in &meta.xattrs {
        set_xattr(fd, key, value)?;
    }
    // (A chown of an inode without setuid or setgid bits leaves its mode as it was.)
    if created.mode {
        return Ok(());
    }
    // SAFETY: plain integer arguments on an fd we hold.
    check(unsafe { libc::fchmod(fd, meta.mode) }, "chmod", b"")
}

/// What an inode got right at its creation: its owner and group, its mode.
#[derive(Clone, Copy, Default)]
pub(super) struct Created {
    pub(super) owner: bool,
    pub(super) mode: bool,
}

pub(super) fn set_mtime_fd(fd: RawFd, mtime: i64) -> Result<(), String> {
    let t = [timespec(mtime), timespec(mtime)];
    // SAFETY: t holds two timespecs.
    check(unsafe { libc::futimens(fd, t.as_ptr()) }, "utimensat", b"")
}

/// linkat(tdir/tname → dir/name) without following a symlink at tname.
pub(super) fn link(tdir: &Dir, tname: &CStr, dir: &Dir, name: &CStr) -> Result<(), String> {
    // SAFETY: both names are NUL-terminated.
    let rc =
        unsafe { libc::linkat(tdir.fd.as_raw_fd(), tname.as_ptr(), dir.fd.as_raw_fd(), name.as_ptr(), 0) };
    check(rc, "link to", tname.to_bytes())
}

/// Copy the entry's `size` bytes of data into `fd` through `buf` (fewer is an error).
pub(super) fn write_all(fd: &OwnedFd, src: &mut impl Read, buf: &mut [u8], size: u64) -> Result<(), String> {
    if size == 0 {
        return Ok(());
    }
    // SAFETY: the File borrows fd for this call only and is never dropped (ManuallyDrop).
    let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    let written = copy(src, &mut file, buf, size)?;
    if written != size {
        return Err(format!("truncated: {written} of {size} bytes"));
    }
    Ok(())
}

/// Copy an old GNU sparse entry's data segments to their offsets, then set the file's size:
/// what lies between them stays a hole.
pub(super) fn write_sparse(
    fd: &OwnedFd,
    src: &mut impl Read,
    buf: &mut [u8],
    map: &[(u64, u64)],
    size: u64,
) -> Result<(), String> {
    // SAFETY: the File borrows fd for this call only and is never dropped (ManuallyDrop).
    let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    for &(offset, length) in map {
        file.seek(SeekFrom::Start(offset)).map_err(|e| format!("seek: {e}"))?;
        let copied = copy(src, &mut file, buf, length)?;
        if copied != length {
            return Err(format!("truncated: a sparse segment of {length} bytes has {copied}"));
        }
    }
    file.set_len(size).map_err(|e| format!("truncate: {e}"))
}

/// Copy at most `limit` bytes from `src` to `dst`; return how many.
fn copy(src: &mut impl Read, dst: &mut File, buf: &mut [u8], limit: u64) -> Result<u64, String> {
    let mut total = 0u64;
    while total < limit {
        let want = (buf.len() as u64).min(limit - total) as usize;
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        dst.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
        total += n as u64;
    }
    Ok(total)
}
