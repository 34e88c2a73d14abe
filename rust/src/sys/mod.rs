//! Thin wrappers over the system calls the runtime needs that libc does not wrap.
//!
//! Everything here is async-signal-safe: it is called in the child between clone and execve,
//! where the process is a copy of a multi-threaded parent and must not allocate or lock.

use libc::{c_char, c_int, c_long, c_uint, c_ulong};

pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
pub const CLONE_PIDFD: u64 = 0x1000;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;
pub const CLOSE_RANGE_CLOEXEC: c_uint = 1 << 2;

/// `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The last errno of this thread.
#[inline]
pub fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// clone3(2) without a new stack: returns twice like fork, 0 in the child.
///
/// # Safety
/// The child runs on a copy of the caller's stack in a copy of a possibly multi-threaded
/// process: it may only make async-signal-safe calls and must end in execve or `_exit`.
pub unsafe fn clone3(args: &mut CloneArgs) -> c_long {
    libc::syscall(libc::SYS_clone3, args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
}

/// clone(2) without a new stack (the fallback where clone3 is missing): fork-like.
///
/// # Safety
/// As for [`clone3`].
pub unsafe fn clone_legacy(flags: u64, pidfd: *mut c_int) -> c_long {
    // x86_64 argument order: flags, stack, parent_tid, child_tid, tls.
    libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD as u64) as c_ulong, 0usize, pidfd, 0usize, 0usize)
}

/// A plain fork by clone3 (clone where clone3 is missing), without libc's fork handlers:
/// returns twice, 0 in the child.
///
/// # Safety
/// As for [`clone3`].
pub unsafe fn fork() -> c_long {
    let mut args = CloneArgs { exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    let pid = clone3(&mut args);
    if pid < 0 && errno() == libc::ENOSYS {
        return clone_legacy(0, std::ptr::null_mut());
    }
    pid
}

/// openat2(2) with RESOLVE_IN_ROOT: resolve `path` as if `root` were `/`.
///
/// # Safety
/// `path` must point to a NUL-terminated string.
pub unsafe fn open_in_root(root: c_int, path: *const c_char, flags: c_int) -> c_int {
    open_in_root_mode(root, path, flags, 0)
}

/// [`open_in_root`] with the `mode` a file created by `O_CREAT` or `O_TMPFILE` gets.
///
/// # Safety
/// `path` must point to a NUL-terminated string.
pub unsafe fn open_in_root_mode(root: c_int, path: *const c_char, flags: c_int, mode: u32) -> c_int {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    libc::syscall(libc::SYS_openat2, root, path, &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        as c_int
}

/// pivot_root(2).
///
/// # Safety
/// Both arguments must be NUL-terminated strings.
pub unsafe fn pivot_root(new_root: *const c_char, put_old: *const c_char) -> c_int {
    libc::syscall(libc::SYS_pivot_root, new_root, put_old) as c_int
}

/// close_range(2).
pub fn close_range(first: c_uint, last: c_uint, flags: c_uint) -> c_int {
    // SAFETY: close_range takes plain integers; it only affects this process's fd table.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) as c_int }
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` for capset(2), version 3.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// capset(2) for the calling thread, with 64-bit masks.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> c_int {
    let header = CapHeader { version: 0x2008_0522, pid: 0 };
    let data = [
        CapData { effective: effective as u32, permitted: permitted as u32, inheritable: inheritable as u32 },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs are the v3 layout capset expects.
    unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) as c_int }
}

/// Format `/proc/self/fd/<fd>` into `buf` (NUL-terminated) without allocating.
pub fn proc_fd_path(fd: c_int, buf: &mut [u8; 32]) -> *const c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr() as *const c_char
}

/// Format `/proc/<pid>/<file>` into `buf` (NUL-terminated) without allocating.
pub fn proc_pid_path(pid: libc::pid_t, file: &[u8], buf: &mut [u8; 64]) -> *const c_char {
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let k = bytes.len().min(buf.len() - 1 - n);
        buf[n..n + k].copy_from_slice(&bytes[..k]);
        n += k;
    };
    put(b"/proc/");
    let mut digits = [0u8; 12];
    let mut len = 0;
    let mut v = pid as u32;
    loop {
        digits[digits.len() - 1 - len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[digits.len() - len..]);
    put(b"/");
    put(file);
    buf[n] = 0;
    buf.as_ptr() as *const c_char
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn proc_pid_path_formats() {
        let mut buf = [0u8; 64];
        let p = proc_pid_path(4321, b"uid_map", &mut buf);
        // SAFETY: NUL-terminated within buf.
        assert_eq!(unsafe { CStr::from_ptr(p) }.to_str().unwrap(), "/proc/4321/uid_map");
    }

    #[test]
    fn proc_fd_path_formats_numbers() {
        let mut buf = [0u8; 32];
        for (fd, want) in [(0, "/proc/self/fd/0"), (7, "/proc/self/fd/7"), (1234, "/proc/self/fd/1234")] {
            let p = proc_fd_path(fd, &mut buf);
            // SAFETY: proc_fd_path NUL-terminates within buf.
            assert_eq!(unsafe { CStr::from_ptr(p) }.to_str().unwrap(), want);
        }
    }
}
