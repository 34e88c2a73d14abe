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
//! kobako-monitor LOG_PATH EXIT_PATH ATTACH_SOCKET [EXIT_COMMAND ARG...]
//! ```
//!
//! With an attach socket (fd 6, bound at ATTACH_SOCKET and listening), clients (`kobako attach`, `kobako run -it`) connect to it and get
//! the container's output as frames `STREAM(1 byte: 1 stdout, 2 stderr) LEN(4, big-endian)
//! DATA`, and at the end `3 4 CODE(4)`. They send frames `KIND(1) LEN(2, big-endian) DATA`:
//! 0 input for the container's stdin (fd 5, or the terminal's master fd 3), 1 a window size
//! (rows, columns: 2 bytes each), 2 the end of the input.

#![no_std]
#![no_main]

mod sys;

use sys::{Fd, PollFd};

/// Bytes read from a stream at once; also the longest line logged as one record.
const BUF: usize = 16 * 1024;
/// How long the streams may stay quiet, once the container has exited, before the monitor
/// stops reading them (a process that escaped the container may hold them open forever)…
const DRAIN_MS: i64 = 200;
/// …and how long it reads them at most after the exit, whatever they do.
const DRAIN_MAX_MS: i64 = 2000;
const POLLERR: i16 = 0x8;
const POLLHUP: i16 = 0x10;

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

    /// Read what is there, pass it on to attached clients, log every whole line, and the
    /// buffer if it fills up. `revents` are poll's for the stream: a hang-up with nothing to
    /// read ends it (a terminal's master may say EAGAIN rather than EIO once its slave is
    /// gone). Returns whether it read anything; `open` is false at the end of the stream.
    fn pump(&mut self, log: Fd, attach: &mut Attach, stream: u8, revents: i16) -> bool {
        let n = sys::read(self.fd, &mut self.buf[self.len..]);
        let hung_up = revents & (POLLHUP | POLLERR) != 0;
        if n == -sys::EINTR || (n == -sys::EAGAIN && !hung_up) {
            return false;
        }
        if n <= 0 {
            self.finish(log);
            return false;
        }
        attach.broadcast(stream, &self.buf[self.len..self.len + n as usize]);
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

const MAX_CLIENTS: usize = 4;
/// A client frame's header and longest payload.
const FRAME: usize = 3 + 4096;

struct Client {
    fd: Fd,
    buf: [u8; FRAME],
    len: usize,
}

/// The attach socket and its clients.
struct Attach {
    listen: Fd,
    clients: [Client; MAX_CLIENTS],
    /// Where client input goes (fd 5, or the terminal's master); -1: nowhere.
    stdin: Fd,
    /// The terminal's master, for window sizes; -1 without a terminal.
    tty: Fd,
}

impl Attach {
    fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let len = (data.len() as u32).to_be_bytes();
        let head = [stream, len[0], len[1], len[2], len[3]];
        for c in self.clients.iter_mut().filter(|c| c.fd >= 0) {
            if !sys::write_patiently(c.fd, &[sys::IoVec::new(&head), sys::IoVec::new(data)], 100) {
                sys::close(c.fd);
                c.fd = -1;
            }
        }
    }

    fn accept(&mut self) {
        let fd = sys::accept(self.listen);
        if fd < 0 {
            return;
        }
        match self.clients.iter_mut().find(|c| c.fd < 0) {
            Some(c) => {
                c.fd = fd;
                c.len = 0;
            }
            None => sys::close(fd),
        }
    }

    /// Read a client's frames and act on each whole one; drop the client at its end.
    fn serve(&mut self, i: usize) {
        let Attach { clients, stdin, tty, .. } = self;
        let tty = *tty;
        let c = &mut clients[i];
        let n = sys::read(c.fd, &mut c.buf[c.len..]);
        if n == -sys::EINTR || n == -sys::EAGAIN {
            return;
        }
        if n <= 0 {
            sys::close(c.fd);
            c.fd = -1;
            return;
        }
        c.len += n as usize;
        let mut start = 0;
        while c.len - start >= 3 {
            let kind = c.buf[start];
            let size = u16::from_be_bytes([c.buf[start + 1], c.buf[start + 2]]) as usize;
            if size > FRAME - 3 {
                sys::close(c.fd);
                c.fd = -1;
                return;
            }
            if c.len - start < 3 + size {
                break;
            }
            let payload = &c.buf[start + 3..start + 3 + size];
            match kind {
                0 if *stdin >= 0 && !sys::write_patiently(*stdin, &[sys::IoVec::new(payload)], 1000) => {
                    close_input(stdin, tty);
                }
                1 if tty >= 0 && size == 4 => {
                    let rows = u16::from_be_bytes([payload[0], payload[1]]);
                    let cols = u16::from_be_bytes([payload[2], payload[3]]);
                    sys::set_winsize(tty, rows, cols);
                }
                2 => close_input(stdin, tty),
                _ => {}
            }
            start += 3 + size;
        }
        c.buf.copy_within(start..c.len, 0);
        c.len -= start;
    }

    /// Tell every client the exit code, and stop listening.
    fn finish(&mut self, code: i32, path: *const u8) {
        if self.listen < 0 {
            return;
        }
        let c = code.to_be_bytes();
        let frame = [3, 0, 0, 0, 4, c[0], c[1], c[2], c[3]];
        for c in self.clients.iter_mut().filter(|c| c.fd >= 0) {
            sys::write_patiently(c.fd, &[sys::IoVec::new(&frame)], 1000);
            sys::close(c.fd);
            c.fd = -1;
        }
        sys::close(self.listen);
        sys::unlink(path);
    }
}

/// The end of the input: the container's stdin pipe closes (a terminal stays).
fn close_input(stdin: &mut Fd, tty: Fd) {
    if *stdin >= 0 && *stdin != tty {
        sys::close(*stdin);
        *stdin = -1;
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
const NO_CLIENT: Client = Client { fd: -1, buf: [0; FRAME], len: 0 };
static mut ATTACH: Attach = Attach { listen: -1, clients: [NO_CLIENT; MAX_CLIENTS], stdin: -1, tty: -1 };

/// The program, called by `_start` with the initial stack's argc, argv and envp.
///
/// # Safety
/// argv and envp are the kernel's NULL-terminated arrays.
unsafe fn run(argc: usize, argv: *const *const u8, envp: *const *const u8) -> ! {
    sys::set_name(b"kobako-monitor\0");
    if argc < 4 {
        sys::exit(2);
    }
    let log_path = *argv.add(1);
    let exit_path = *argv.add(2);
    let attach_path = *argv.add(3);
    // Which of the inherited fds are there, before any fd of ours takes a free number.
    let inherited = [sys::is_open(3), sys::is_open(4), sys::is_open(5), sys::is_open(6)];
    let chld = sys::signalfd_for_sigchld();
    let log = sys::open(log_path, sys::O_WRONLY | sys::O_APPEND | sys::O_CREAT | sys::O_CLOEXEC, 0o600);
    // SAFETY: one thread; the statics are only used here.
    let mut streams: [&mut Stream; 2] =
        [&mut *core::ptr::addr_of_mut!(OUT), &mut *core::ptr::addr_of_mut!(ERR)];
    for (s, open) in streams.iter_mut().zip(inherited) {
        s.open = open;
        if s.open {
            sys::set_nonblocking(s.fd);
        }
    }
    let [out, err] = streams;
    let attach = &mut *core::ptr::addr_of_mut!(ATTACH);
    // Without a stderr stream, fd 3 is a terminal's master: input and window sizes go there.
    attach.tty = if out.open && !err.open { out.fd } else { -1 };
    attach.stdin = if inherited[2] { 5 } else { attach.tty };
    if attach.stdin >= 0 {
        sys::set_nonblocking(attach.stdin);
    }
    // The socket comes bound and listening as fd 6, so that a client (`run -it`) could
    // connect before the container started, and miss none of its output: it is accepted
    // before anything is read.
    if inherited[3] {
        attach.listen = 6;
        sys::set_nonblocking(6);
        attach.accept();
    }
    // The container may have exited before the signalfd existed (its SIGCHLD then waits,
    // blocked, for the signalfd; this is the belt to those braces).
    let mut code: Option<i32> = sys::reap_any().map(exit_code);
    let mut exited_at: Option<i64> = code.map(|_| sys::monotonic_ms());
    let mut last_data: i64 = 0;
    while out.open || err.open || code.is_none() {
        let mut fds = [PollFd::new(-1); 4 + MAX_CLIENTS];
        fds[0] = PollFd::new(if out.open { out.fd } else { -1 });
        fds[1] = PollFd::new(if err.open { err.fd } else { -1 });
        fds[2] = PollFd::new(if code.is_none() { chld } else { -1 });
        fds[3] = PollFd::new(attach.listen);
        for (p, c) in fds[4..].iter_mut().zip(attach.clients.iter()) {
            *p = PollFd::new(c.fd);
        }
        let timeout = if code.is_some() { DRAIN_MS } else { -1 };
        let n = sys::poll(&mut fds, timeout);
        if let Some(at) = exited_at {
            // after the exit: stop once the streams are quiet, or after DRAIN_MAX_MS at most;
            // whoever still holds a stream then is not the container
            let now = sys::monotonic_ms();
            if now - at >= DRAIN_MAX_MS || (n == 0 && now - last_data.max(at) >= DRAIN_MS) {
                break;
            }
        }
        if n <= 0 {
            continue;
        }
        if fds[3].revents != 0 {
            attach.accept();
        }
        for (s, p, stream) in [(&mut *out, fds[0], 1), (&mut *err, fds[1], 2)] {
            if s.open && p.revents != 0 && s.pump(log, attach, stream, p.revents) {
                last_data = sys::monotonic_ms();
            }
        }
        if fds[2].revents != 0 {
            sys::drain_signalfd(chld);
            while let Some(status) = sys::reap_any() {
                code = Some(exit_code(status));
                exited_at.get_or_insert_with(sys::monotonic_ms);
            }
        }
        for i in 0..MAX_CLIENTS {
            if fds[4 + i].revents != 0 && attach.clients[i].fd >= 0 {
                attach.serve(i);
            }
        }
    }
    for s in [out, err] {
        if s.open {
            s.finish(log);
        }
    }
    sys::close(log);
    sys::close(chld);
    let code = code.unwrap_or(255);
    write_exit(exit_path, code);
    attach.finish(code, attach_path);
    if argc > 4 {
        sys::execve(*argv.add(4), argv.add(4), envp);
    }
    sys::exit(0)
}

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
