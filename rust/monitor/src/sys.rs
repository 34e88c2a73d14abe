//! The few system calls the monitor makes, raw (there is no libc), and the entry point.

use core::arch::{asm, global_asm};

pub type Fd = i32;

pub const EINTR: isize = 4;
pub const EAGAIN: isize = 11;
pub const O_WRONLY: i32 = 0o1;
pub const O_CREAT: i32 = 0o100;
pub const O_TRUNC: i32 = 0o1000;
pub const O_APPEND: i32 = 0o2000;
pub const O_CLOEXEC: i32 = 0o2000000;
const AT_FDCWD: isize = -100;
const F_GETFD: isize = 1;
const POLLIN: i16 = 0x1;
const SIGCHLD: u32 = 17;
const SIG_BLOCK: isize = 0;
const SFD_NONBLOCK: isize = 0o4000;
const SFD_CLOEXEC: isize = 0o2000000;
const WNOHANG: isize = 1;
const CLOCK_REALTIME: isize = 0;
const CLOCK_MONOTONIC: isize = 1;
const PR_SET_NAME: isize = 15;
const F_SETFL: isize = 4;
const O_NONBLOCK: isize = 0o4000;
const TIOCSWINSZ: isize = 0x5414;
const POLLOUT: i16 = 0x4;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: isize = 0;
    pub const CLOSE: isize = 3;
    pub const WRITEV: isize = 20;
    pub const FCNTL: isize = 72;
    pub const FSYNC: isize = 74;
    pub const RT_SIGPROCMASK: isize = 14;
    pub const EXECVE: isize = 59;
    pub const WAIT4: isize = 61;
    pub const PRCTL: isize = 157;
    pub const CLOCK_GETTIME: isize = 228;
    pub const EXIT_GROUP: isize = 231;
    pub const OPENAT: isize = 257;
    pub const PPOLL: isize = 271;
    pub const SIGNALFD4: isize = 289;
    pub const RENAMEAT: isize = 264;
    pub const IOCTL: isize = 16;
    pub const ACCEPT4: isize = 288;
    pub const UNLINKAT: isize = 263;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READ: isize = 63;
    pub const CLOSE: isize = 57;
    pub const WRITEV: isize = 66;
    pub const FCNTL: isize = 25;
    pub const FSYNC: isize = 82;
    pub const RT_SIGPROCMASK: isize = 135;
    pub const EXECVE: isize = 221;
    pub const WAIT4: isize = 260;
    pub const PRCTL: isize = 167;
    pub const CLOCK_GETTIME: isize = 113;
    pub const EXIT_GROUP: isize = 94;
    pub const OPENAT: isize = 56;
    pub const PPOLL: isize = 73;
    pub const SIGNALFD4: isize = 74;
    pub const RENAMEAT: isize = 38;
    pub const IOCTL: isize = 29;
    pub const ACCEPT4: isize = 242;
    pub const UNLINKAT: isize = 35;
}

#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call monitor_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
global_asm!(".globl _start", "_start:", "mov x0, sp", "and sp, x0, #-16", "bl monitor_main", "brk #0",);

#[cfg(target_arch = "x86_64")]
unsafe fn syscall6(n: isize, a: [isize; 6]) -> isize {
    let ret: isize;
    asm!(
        "syscall",
        inlateout("rax") n => ret,
        in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
        lateout("rcx") _, lateout("r11") _,
        options(nostack),
    );
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall6(n: isize, a: [isize; 6]) -> isize {
    let ret: isize;
    asm!(
        "svc 0",
        in("x8") n,
        inlateout("x0") a[0] => ret,
        in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
        options(nostack),
    );
    ret
}

fn sc(n: isize, a: &[isize]) -> isize {
    let mut args = [0isize; 6];
    args[..a.len()].copy_from_slice(a);
    // SAFETY: every caller passes arguments valid for the call it names.
    unsafe { syscall6(n, args) }
}

pub fn read(fd: Fd, buf: &mut [u8]) -> isize {
    sc(nr::READ, &[fd as isize, buf.as_mut_ptr() as isize, buf.len() as isize])
}

pub fn close(fd: Fd) {
    sc(nr::CLOSE, &[fd as isize]);
}

pub fn open(path: *const u8, flags: i32, mode: u32) -> Fd {
    sc(nr::OPENAT, &[AT_FDCWD, path as isize, flags as isize, mode as isize]) as Fd
}

pub fn is_open(fd: Fd) -> bool {
    sc(nr::FCNTL, &[fd as isize, F_GETFD]) >= 0
}

pub fn fsync(fd: Fd) {
    sc(nr::FSYNC, &[fd as isize]);
}

pub fn rename(from: *const u8, to: *const u8) {
    sc(nr::RENAMEAT, &[AT_FDCWD, from as isize, AT_FDCWD, to as isize]);
}

pub fn exit(code: i32) -> ! {
    loop {
        sc(nr::EXIT_GROUP, &[code as isize]);
    }
}

/// # Safety
/// `path`, `argv`, `envp` as execve(2) wants them.
pub unsafe fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) {
    sc(nr::EXECVE, &[path as isize, argv as isize, envp as isize]);
}

pub fn set_name(name: &[u8]) {
    sc(nr::PRCTL, &[PR_SET_NAME, name.as_ptr() as isize]);
}

pub fn set_nonblocking(fd: Fd) {
    sc(nr::FCNTL, &[fd as isize, F_SETFL, O_NONBLOCK]);
}

pub fn unlink(path: *const u8) {
    sc(nr::UNLINKAT, &[AT_FDCWD, path as isize, 0]);
}

/// accept4(2), the new socket non-blocking and close-on-exec.
pub fn accept(fd: Fd) -> Fd {
    const SOCK_NONBLOCK: isize = 0o4000;
    const SOCK_CLOEXEC: isize = 0o2000000;
    sc(nr::ACCEPT4, &[fd as isize, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC]) as Fd
}

/// Set a terminal's window size.
pub fn set_winsize(fd: Fd, rows: u16, cols: u16) {
    let size: [u16; 4] = [rows, cols, 0, 0];
    sc(nr::IOCTL, &[fd as isize, TIOCSWINSZ, size.as_ptr() as isize]);
}

/// Write all of `iov` (at most 3 parts), waiting up to `patience_ms` (-1: as long as it
/// takes) for room each time a non-blocking fd is full. False if it could not (the caller
/// drops a reader that slow).
pub fn write_patiently(fd: Fd, iov: &[IoVec], patience_ms: i64) -> bool {
    let empty = || IoVec { base: core::ptr::null(), len: 0 };
    let mut parts = [empty(), empty(), empty()];
    let count = iov.len().min(parts.len());
    for (dst, src) in parts.iter_mut().zip(iov) {
        dst.base = src.base;
        dst.len = src.len;
    }
    let mut first = 0;
    while first < count {
        if parts[first].len == 0 {
            first += 1;
            continue;
        }
        let n = sc(nr::WRITEV, &[fd as isize, parts[first..].as_ptr() as isize, (count - first) as isize]);
        if n == -EINTR {
            continue;
        }
        if n == -EAGAIN {
            let mut p = [PollFd { fd, events: POLLOUT, revents: 0 }];
            if poll(&mut p, patience_ms) <= 0 {
                return false;
            }
            continue;
        }
        if n < 0 {
            return false;
        }
        let mut left = n as usize;
        while first < count && left >= parts[first].len {
            left -= parts[first].len;
            first += 1;
        }
        if first < count {
            // SAFETY: left < parts[first].len, inside the same buffer.
            parts[first].base = unsafe { parts[first].base.add(left) };
            parts[first].len -= left;
        }
    }
    true
}

#[repr(C)]
pub struct IoVec {
    base: *const u8,
    len: usize,
}

impl IoVec {
    pub fn new(data: &[u8]) -> IoVec {
        IoVec { base: data.as_ptr(), len: data.len() }
    }
}

/// writev until everything is written (or an error other than EINTR), on a blocking fd.
pub fn writev_all(fd: Fd, iov: &[IoVec]) {
    write_patiently(fd, iov, -1);
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PollFd {
    fd: Fd,
    events: i16,
    pub revents: i16,
}

impl PollFd {
    pub fn new(fd: Fd) -> PollFd {
        PollFd { fd, events: POLLIN, revents: 0 }
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// poll(2) through ppoll; `timeout_ms` < 0 waits forever.
pub fn poll(fds: &mut [PollFd], timeout_ms: i64) -> isize {
    let ts = Timespec { sec: timeout_ms / 1000, nsec: timeout_ms % 1000 * 1_000_000 };
    let tsp = if timeout_ms < 0 { 0 } else { &ts as *const Timespec as isize };
    sc(nr::PPOLL, &[fds.as_mut_ptr() as isize, fds.len() as isize, tsp, 0, 8])
}

fn clock(id: isize) -> Timespec {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    sc(nr::CLOCK_GETTIME, &[id, &mut ts as *mut Timespec as isize]);
    ts
}

/// Seconds and nanoseconds since the epoch.
pub fn realtime() -> (i64, i64) {
    let ts = clock(CLOCK_REALTIME);
    (ts.sec, ts.nsec)
}

pub fn monotonic_ms() -> i64 {
    let ts = clock(CLOCK_MONOTONIC);
    ts.sec * 1000 + ts.nsec / 1_000_000
}

/// Block SIGCHLD and return a non-blocking signalfd that reads it.
pub fn signalfd_for_sigchld() -> Fd {
    let mask: u64 = 1 << (SIGCHLD - 1);
    sc(nr::RT_SIGPROCMASK, &[SIG_BLOCK, &mask as *const u64 as isize, 0, 8]);
    sc(nr::SIGNALFD4, &[-1, &mask as *const u64 as isize, 8, SFD_NONBLOCK | SFD_CLOEXEC]) as Fd
}

pub fn drain_signalfd(fd: Fd) {
    let mut info = [0u8; 128];
    while read(fd, &mut info) > 0 {}
}

/// Reap one exited child without waiting; its wait status.
pub fn reap_any() -> Option<i32> {
    let mut status: i32 = 0;
    let pid = sc(nr::WAIT4, &[-1, &mut status as *mut i32 as isize, WNOHANG, 0]);
    if pid > 0 {
        Some(status)
    } else {
        None
    }
}

pub fn cstr_len(s: *const u8) -> usize {
    // SAFETY: s is NUL-terminated (an argument string).
    unsafe { strlen(s) }
}

// The compiler may call these for copies and fills; there is no libc to provide them.
// Byte loops through volatile accesses, so that they are not turned back into calls.

/// # Safety
/// As C's memcpy.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
    }
    dst
}

/// # Safety
/// As C's memmove.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        memcpy(dst, src, n)
    } else {
        for i in (0..n).rev() {
            core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
        }
        dst
    }
}

/// # Safety
/// As C's memset.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(dst.add(i), c as u8);
    }
    dst
}

/// # Safety
/// As C's memcmp.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        let (x, y) = (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i)));
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// As C's strlen.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    while core::ptr::read_volatile(s.add(n)) != 0 {
        n += 1;
    }
    n
}

/// # Safety
/// As C's bcmp.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
