//! kobako-monitor: what stays with a detached container after kobako has exited (the role of
//! podman's conmon or containerd's shim).
//!
//! The native module forks a process that clones the container and then executes this
//! program in its place, so the container is this process's child. It
//!
//! - copies the container's stdout (fd 3) and stderr (fd 4, absent with a terminal, whose
//!   master is fd 3) into the log file, one record per line in the CRI format that conmon
//!   also writes (`2024-01-02T03:04:05.123456789Z stdout F text`; `P` marks a piece of a line
//!   longer than the buffer, or a last line without its newline);
//! - reaps the container and writes its exit status and the time as `CODE UNIX_NS` to the
//!   exit file (temp + rename), the code as docker reports it (128+N for signal N);
//! - then executes the exit command, if any (kobako's clean-up: cgroup, restart policy,
//!   `--rm`), with the same pid, so that whoever waits for this process waits for both.
//!
//! It is freestanding (no libc, no std, raw system calls, a static executable) because one
//! runs per container for as long as it lives: its resident memory is the price, measured
//! in `benches/lifecycle.py` against conmon's. Usage:
//!
//! ```text
//! kobako-monitor LOG_PATH EXIT_PATH [EXIT_COMMAND ARG...]
//! ```

#![no_std]
#![no_main]

mod sys;

use sys::{Fd, PollFd};

/// Bytes read from a stream at once; also the longest line logged as one record.
const BUF: usize = 16 * 1024;
/// How long to wait for the streams' end once the container has exited (a process that
/// escaped the container may hold them open forever).
const DRAIN_MS: i64 = 200;

struct Stream {
    fd: Fd,
    name: &'static [u8],
    buf: [u8; BUF],
    len: usize,
    open: bool,
}

impl Stream {
    const fn new(fd: Fd, name: &'static [u8]) -> Stream {
        Stream { fd, name, buf: [0; BUF], len: 0, open: false }
    }

    /// Read what is there; log every whole line, and the buffer if it fills up.
    /// Returns false at the end of the stream (or on an error).
    fn pump(&mut self, log: Fd) -> bool {
        let n = sys::read(self.fd, &mut self.buf[self.len..]);
        if n == -sys::EINTR || n == -sys::EAGAIN {
            return true;
        }
        if n <= 0 {
            self.finish(log);
            return false;
        }
        self.len += n as usize;
        let mut start = 0;
        while let Some(i) = self.buf[start..self.len].iter().position(|&b| b == b'\n') {
            record(log, self.name, b'F', &self.buf[start..start + i]);
            start += i + 1;
        }
        if start == 0 && self.len == BUF {
            record(log, self.name, b'P', &self.buf[..BUF]);
            start = BUF;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
        true
    }

    /// Log a last line that had no newline, and close.
    fn finish(&mut self, log: Fd) {
        if self.len > 0 {
            record(log, self.name, b'P', &self.buf[..self.len]);
            self.len = 0;
        }
        sys::close(self.fd);
        self.open = false;
    }
}

/// Append one log record: `TIME STREAM TAG TEXT\n`, in one write so records never interleave.
fn record(log: Fd, stream: &[u8], tag: u8, text: &[u8]) {
    let mut head = [0u8; 48];
    let mut n = timestamp(&mut head);
    for &b in b" ".iter().chain(stream).chain(b" ").chain(core::slice::from_ref(&tag)).chain(b" ") {
        head[n] = b;
        n += 1;
    }
    let iov = [sys::IoVec::new(&head[..n]), sys::IoVec::new(text), sys::IoVec::new(b"\n")];
    sys::writev_all(log, &iov);
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ` (UTC, RFC 3339 with nanoseconds) into `out`; its length.
fn timestamp(out: &mut [u8; 48]) -> usize {
    let (secs, nanos) = sys::realtime();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut n = 0;
    let mut put = |value: i64, width: usize, after: u8| {
        let mut v = value;
        for i in (0..width).rev() {
            out[n + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        n += width;
        if after != 0 {
            out[n] = after;
            n += 1;
        }
    };
    put(y, 4, b'-');
    put(m, 2, b'-');
    put(d, 2, b'T');
    put(rem / 3600, 2, b':');
    put(rem / 60 % 60, 2, b':');
    put(rem % 60, 2, b'.');
    put(nanos, 9, b'Z');
    n
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Write `CODE UNIX_NS\n` to `path` atomically.
fn write_exit(path: *const u8, code: i32) {
    let mut tmp = [0u8; 4096];
    let plen = sys::cstr_len(path);
    if plen + 5 > tmp.len() {
        return;
    }
    // SAFETY: path is a NUL-terminated argument of plen bytes.
    let p = unsafe { core::slice::from_raw_parts(path, plen) };
    tmp[..plen].copy_from_slice(p);
    tmp[plen..plen + 5].copy_from_slice(b".tmp\0");
    let (secs, nanos) = sys::realtime();
    let mut line = [0u8; 48];
    let mut n = 0;
    for (value, after) in [(code as i64, b' '), (secs * 1_000_000_000 + nanos, b'\n')] {
        n += decimal(value, &mut line[n..]);
        line[n] = after;
        n += 1;
    }
    let fd = sys::open(tmp.as_ptr(), sys::O_WRONLY | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC, 0o600);
    if fd < 0 {
        return;
    }
    sys::writev_all(fd, &[sys::IoVec::new(&line[..n])]);
    sys::fsync(fd);
    sys::close(fd);
    sys::rename(tmp.as_ptr(), path);
}

fn decimal(value: i64, out: &mut [u8]) -> usize {
    let neg = value < 0;
    let mut v = value.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut k = 0;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut n = 0;
    if neg {
        out[0] = b'-';
        n = 1;
    }
    for i in (0..k).rev() {
        out[n] = digits[i];
        n += 1;
    }
    n
}

/// The docker-style exit code of a wait status.
fn exit_code(status: i32) -> i32 {
    let sig = status & 0x7f;
    if sig == 0 {
        (status >> 8) & 0xff
    } else {
        128 + sig
    }
}

static mut OUT: Stream = Stream::new(3, b"stdout");
static mut ERR: Stream = Stream::new(4, b"stderr");

/// The program, called by `_start` with the initial stack's argc, argv and envp.
///
/// # Safety
/// argv and envp are the kernel's NULL-terminated arrays.
unsafe fn run(argc: usize, argv: *const *const u8, envp: *const *const u8) -> ! {
    sys::set_name(b"kobako-monitor\0");
    if argc < 3 {
        sys::exit(2);
    }
    let log_path = *argv.add(1);
    let exit_path = *argv.add(2);
    let chld = sys::signalfd_for_sigchld();
    let log = sys::open(log_path, sys::O_WRONLY | sys::O_APPEND | sys::O_CREAT | sys::O_CLOEXEC, 0o600);
    // SAFETY: one thread; the statics are only used here.
    let mut streams: [&mut Stream; 2] =
        [&mut *core::ptr::addr_of_mut!(OUT), &mut *core::ptr::addr_of_mut!(ERR)];
    for s in streams.iter_mut() {
        s.open = sys::is_open(s.fd);
    }
    let [out, err] = streams;
    // The container may have exited before the signalfd existed (its SIGCHLD then waits,
    // blocked, for the signalfd; this is the belt to those braces).
    let mut code: Option<i32> = sys::reap_any().map(exit_code);
    let mut quiet_since: Option<i64> = None;
    while out.open || err.open || code.is_none() {
        let mut fds = [
            PollFd::new(if out.open { out.fd } else { -1 }),
            PollFd::new(if err.open { err.fd } else { -1 }),
            PollFd::new(if code.is_none() { chld } else { -1 }),
        ];
        let timeout = if code.is_some() { DRAIN_MS } else { -1 };
        let n = sys::poll(&mut fds, timeout);
        if n == 0 {
            // drained and quiet after the exit: whoever still holds a stream is not ours
            if let Some(since) = quiet_since {
                if sys::monotonic_ms() - since >= DRAIN_MS {
                    break;
                }
            }
            continue;
        }
        if n < 0 {
            continue;
        }
        for (s, p) in [(&mut *out, fds[0]), (&mut *err, fds[1])] {
            if s.open && p.revents != 0 && !s.pump(log) {
                s.open = false;
            }
        }
        if fds[2].revents != 0 {
            sys::drain_signalfd(chld);
            while let Some(status) = sys::reap_any() {
                code = Some(exit_code(status));
            }
        }
        if code.is_some() {
            quiet_since = Some(sys::monotonic_ms());
        }
    }
    for s in [out, err] {
        if s.open {
            s.finish(log);
        }
    }
    sys::close(log);
    sys::close(chld);
    write_exit(exit_path, code.unwrap_or(255));
    if argc > 3 {
        sys::execve(*argv.add(3), argv.add(3), envp);
    }
    sys::exit(0)
}

/// Entered from `_start` with the address of the initial stack (argc, argv..., 0, envp...).
///
/// # Safety
/// `sp` is the process's initial stack pointer.
#[no_mangle]
unsafe extern "C" fn monitor_main(sp: *const usize) -> ! {
    let argc = *sp;
    let argv = sp.add(1) as *const *const u8;
    let envp = argv.add(argc + 1);
    run(argc, argv, envp)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    sys::exit(101)
}
