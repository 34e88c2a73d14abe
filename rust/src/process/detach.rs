//! Detached containers: the container becomes the child of a monitor process that outlives us.
//!
//! ```text
//! caller ── clone ──> M0 ── clone ──> M ── launch ──> container
//!   │                 exits at once   │ setsid; reports the pids (or the failure) on a pipe;
//!   │ reaps M0, reads the report      └─ execveat(the monitor's memfd): M *is* the monitor,
//!   └─ returns (container pid, monitor pid)    and the container stays its child
//! ```
//!
//! M0 exists so that M is not our child: it is re-parented to init (or the nearest subreaper)
//! and lives on after we exit. M and M0 are forked copies of a possibly multi-threaded process,
//! so they only make system calls: everything they use was prepared before the first clone.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use libc::c_int;

use super::plan::{pointer_array, Plan};
use super::{kill_and_reap, launch, Failure, Prepared, Report, SignalsBlocked};
use crate::error::{Error, Result};
use crate::sys;

/// The monitor's executable (built by build.rs from `rust/monitor`).
static MONITOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kobako-monitor"));

/// A sealed memfd holding the monitor, made once per process (CLOEXEC: it is executed by
/// fd, and no container or monitor inherits it open).
pub fn monitor_exe() -> Result<c_int> {
    static FD: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = FD.get() {
        return Ok(fd.as_raw_fd());
    }
    // SAFETY: memfd_create with a static name; the fd is owned below.
    let raw = unsafe {
        libc::memfd_create(c"kobako-monitor".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    };
    if raw < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: raw was just made and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, MONITOR)
        .map_err(|source| Error::Os { what: "writing the monitor", source })?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: plain fcntl on our fd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::last_os("sealing the monitor"));
    }
    let _ = FD.set(OwnedFd::from(file));
    Ok(FD.get().expect("set above").as_raw_fd())
}

/// The monitor to execute once the container runs, and what to hand it.
pub struct Monitor {
    /// A memfd (or any fd) holding the monitor executable.
    pub exe: c_int,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Becomes the monitor's fd 3: the container's stdout (or its terminal's master).
    pub out_fd: c_int,
    /// Becomes the monitor's fd 4: the container's stderr (-1: none, with a terminal).
    pub err_fd: c_int,
    /// Becomes the monitor's fd 5: the write end of the container's stdin pipe (-1: none).
    pub in_fd: c_int,
    /// Becomes the monitor's fd 6: its attach socket, bound and listening (-1: none).
    pub listen_fd: c_int,
    /// /dev/null, for the monitor's 0, 1 and 2.
    pub null_fd: c_int,
}

/// What M writes to the report pipe.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Message {
    /// 1: the container runs; 2: a failure of ours; 3: the container's set-up failed.
    kind: u32,
    pid: libc::pid_t,
    monitor: libc::pid_t,
    report: Report,
    errno: c_int,
    /// The address and length of a `&'static str` naming the failed call: M is a fork of this
    /// process, so its static data lies at the same addresses here.
    what: usize,
    what_len: usize,
}

const STARTED: u32 = 1;
const OURS: u32 = 2;
const CHILD: u32 = 3;

impl Message {
    fn failure(f: Failure) -> Message {
        match f {
            Failure::Os { what, errno } => Message {
                kind: OURS,
                errno,
                what: what.as_ptr() as usize,
                what_len: what.len(),
                ..Default::default()
            },
            Failure::Child(report) => Message { kind: CHILD, report, ..Default::default() },
        }
    }

    fn into_failure(self) -> Failure {
        if self.kind == CHILD {
            return Failure::Child(self.report);
        }
        // SAFETY: `what` points into this executable's static data (see the field's docs).
        let what = unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.what as *const u8, self.what_len))
        };
        Failure::Os { what, errno: self.errno }
    }
}

fn send(fd: c_int, m: &Message) {
    // SAFETY: writing a plain struct; a pipe write of this size is atomic.
    unsafe { libc::write(fd, m as *const Message as *const libc::c_void, std::mem::size_of::<Message>()) };
}

/// Start the container per `plan` under a new monitor; returns (container pid, monitor pid)
/// once the container has exec'd its command and the monitor has been executed.
pub fn spawn_detached(plan: &Plan, monitor: &Monitor) -> Result<(libc::pid_t, libc::pid_t)> {
    let prepared = Prepared::new(plan)?;
    let argv = pointer_array(&monitor.argv);
    let envp = pointer_array(&monitor.env);
    if monitor.argv.is_empty() {
        return Err(Error::Plan("the monitor needs an argv[0]".into()));
    }
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the pipe's two ends.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os("pipe2"));
    }
    // SAFETY: both ends were just made and are owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let middle = {
        let _blocked = SignalsBlocked::new();
        // SAFETY: the child only runs `middle`, which makes system calls and exits.
        let pid = unsafe { sys::fork() };
        if pid == 0 {
            // SAFETY: in the fresh child, as `middle` requires.
            unsafe { middle(&prepared, monitor, &argv, &envp, write_end.as_raw_fd()) }
        }
        if pid < 0 {
            return Err(Error::last_os("clone"));
        }
        pid as libc::pid_t
    };
    drop(write_end);
    // SAFETY: middle is our child; reap it (it exits right after its own clone).
    unsafe {
        let mut status = 0;
        while libc::waitpid(middle, &mut status, 0) < 0 && sys::errno() == libc::EINTR {}
    }
    let read = |m: &mut Message| loop {
        // SAFETY: reading at most one Message into a plain struct.
        let n = unsafe {
            libc::read(
                read_end.as_raw_fd(),
                m as *mut Message as *mut libc::c_void,
                std::mem::size_of::<Message>(),
            )
        };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        return n;
    };
    let mut first = Message::default();
    let n = read(&mut first);
    if n != std::mem::size_of::<Message>() as isize {
        return Err(Error::Os {
            what: "starting the monitor",
            source: std::io::Error::other("it exited early"),
        });
    }
    if first.kind != STARTED {
        return Err(first.into_failure().into_error(plan));
    }
    let mut second = Message::default();
    if read(&mut second) > 0 {
        // the monitor could not be executed (M has killed the container)
        return Err(second.into_failure().into_error(plan));
    }
    Ok((first.pid, first.monitor))
}

/// M0: clone M, report a failure to, and exit.
///
/// # Safety
/// Only in the freshly cloned child of [`spawn_detached`].
unsafe fn middle(
    p: &Prepared,
    mon: &Monitor,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: c_int,
) -> ! {
    let pid = sys::fork();
    if pid == 0 {
        become_monitor(p, mon, argv, envp, report)
    }
    if pid < 0 {
        send(report, &Message::failure(Failure::os("forking the monitor")));
    }
    libc::_exit(0)
}

/// M: a session of its own, the container, then the monitor's executable in its place.
unsafe fn become_monitor(
    p: &Prepared,
    mon: &Monitor,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    report: c_int,
) -> ! {
    libc::setsid();
    // A daemon's cwd is /: the caller's directory is not kept busy (unmountable) for as long
    // as the container lives, nor on the path of the exit command.
    libc::chdir(c"/".as_ptr());
    let started = match launch(p) {
        Ok(started) => started,
        Err(f) => {
            send(report, &Message::failure(f));
            libc::_exit(1)
        }
    };
    let pid = started.pid;
    send(report, &Message { kind: STARTED, pid, monitor: libc::getpid(), ..Default::default() });
    let fail = |what: &'static str| -> ! {
        send(report, &Message::failure(Failure::os(what)));
        kill_and_reap(pid);
        libc::_exit(1)
    };
    // Move what the monitor keeps above the low numbers first, so that placing one at 3 or 4
    // cannot clobber another.
    let high = |fd: c_int| if fd < 0 { -1 } else { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
    let (exe, out, err, null) = (high(mon.exe), high(mon.out_fd), high(mon.err_fd), high(mon.null_fd));
    let (input, listen) = (high(mon.in_fd), high(mon.listen_fd));
    if exe < 0
        || out < 0
        || null < 0
        || (mon.err_fd >= 0 && err < 0)
        || (mon.in_fd >= 0 && input < 0)
        || (mon.listen_fd >= 0 && listen < 0)
    {
        fail("preparing the monitor's fds");
    }
    for (from, to) in [(null, 0), (null, 1), (null, 2), (out, 3)] {
        if libc::dup2(from, to) < 0 {
            fail("preparing the monitor's fds");
        }
    }
    if err >= 0 {
        if libc::dup2(err, 4) < 0 {
            fail("preparing the monitor's fds");
        }
    } else {
        libc::close(4);
    }
    for (fd, to) in [(input, 5), (listen, 6)] {
        if fd >= 0 {
            if libc::dup2(fd, to) < 0 {
                fail("preparing the monitor's fds");
            }
        } else {
            libc::close(to);
        }
    }
    if sys::close_range(7, u32::MAX, sys::CLOSE_RANGE_CLOEXEC) != 0 {
        for fd in 7..4096 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    drop(started.pidfd);
    // Signals: default actions, and only SIGCHLD blocked, so that the container's exit, if it
    // comes before the monitor reads its signalfd, stays pending across execve for it.
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut mask: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut mask);
    libc::sigaddset(&mut mask, libc::SIGCHLD);
    libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
    libc::syscall(libc::SYS_execveat, exe, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH);
    fail("executing the monitor")
}
