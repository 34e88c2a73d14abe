//! Launching a container's first process: one clone into all its namespaces (and, on cgroup v2,
//! straight into its cgroup), a sync socket for the go-ahead and for errors, no re-exec.
//!
//! Protocol on the SOCK_SEQPACKET socketpair (both ends CLOEXEC):
//!
//! | when                          | parent → child | child → parent                |
//! |-------------------------------|----------------|-------------------------------|
//! | uid/gid maps (user namespace) | `1` (go)       |                               |
//! | any set-up step fails         |                | [`Report`] {step, errno, idx} |
//! | execve succeeds               |                | EOF (the socket closes)       |

pub mod child;
pub mod detach;
pub mod init;
pub mod plan;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use libc::c_int;

use crate::error::{Error, Result, Step};
use crate::sys;
use plan::{pointer_array, Plan};

/// A failure report from the child: the step, its errno and an index into the plan's list for
/// that step (which mount, device, path…).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub step: u32,
    pub errno: c_int,
    pub index: u32,
}

/// Report a failure without an index and exit (for modules other than `child`).
pub(crate) fn child_fail(sock: c_int, step: Step, errno: c_int) -> ! {
    let report = Report { step: step as u32, errno, index: 0 };
    // SAFETY: writing a plain struct to our socket, then exiting without running destructors.
    unsafe {
        libc::write(sock, &report as *const Report as *const libc::c_void, std::mem::size_of::<Report>());
        libc::_exit(1)
    }
}

/// A started container process.
pub struct Started {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

fn socketpair() -> std::result::Result<(OwnedFd, OwnedFd), Failure> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if rc != 0 {
        return Err(Failure::os("socketpair"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Blocks every signal in this thread for its lifetime, so that no handler of the parent runs in
/// the child before it resets them.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain old data, filled by sigfillset; pthread_sigmask saves the old.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in new().
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Returns the calling thread to the namespace it was in (for its future children) on drop.
struct NsRestore {
    own: c_int,
    nstype: c_int,
}

impl NsRestore {
    /// Enter the namespace `fd` (of type `nstype`) on this thread; -1 enters nothing. No
    /// allocation: `own_path` is the thread's own namespace file.
    fn enter(
        fd: c_int,
        nstype: c_int,
        own_path: &std::ffi::CStr,
        what: &'static str,
    ) -> std::result::Result<NsRestore, Failure> {
        if fd < 0 {
            return Ok(NsRestore { own: -1, nstype });
        }
        // SAFETY: opening a static path; setns on fds we hold.
        let own = unsafe { libc::open(own_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if own < 0 || unsafe { libc::setns(fd, nstype) } != 0 {
            let failure = Failure::os(what);
            if own >= 0 {
                unsafe { libc::close(own) };
            }
            return Err(failure);
        }
        Ok(NsRestore { own, nstype })
    }
}

impl Drop for NsRestore {
    fn drop(&mut self) {
        if self.own >= 0 {
            // SAFETY: setns back to the namespace this thread was in, then close its fd. A
            // thread may always re-enter its own namespace (as root, the only way we run).
            unsafe {
                libc::setns(self.own, self.nstype);
                libc::close(self.own);
            }
        }
    }
}

/// Why a launch failed, in a form made without allocating (it may happen in a forked copy of
/// a multi-threaded process): a call of ours, or the child's report.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Os { what: &'static str, errno: c_int },
    Child(Report),
}

impl Failure {
    fn os(what: &'static str) -> Failure {
        Failure::Os { what, errno: sys::errno() }
    }

    /// The error to raise, with the path the failed step worked on.
    pub fn into_error(self, plan: &Plan) -> Error {
        match self {
            Failure::Os { what, errno } => Error::Os { what, source: io::Error::from_raw_os_error(errno) },
            Failure::Child(report) => {
                let step = Step::from_u32(report.step).unwrap_or(Step::Sync);
                Error::Child { step, errno: report.errno, path: describe(plan, step, report.index) }
            }
        }
    }
}

/// What the launch needs beside the plan, made before clone: the launch itself may run in a
/// forked copy of a multi-threaded process, where it must not allocate.
pub struct Prepared<'a> {
    plan: &'a Plan,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    seccomp: Option<libc::sock_fprog>,
    scrub: init::Scrub,
}

impl<'a> Prepared<'a> {
    pub fn new(plan: &'a Plan) -> Result<Prepared<'a>> {
        if plan.argv.is_empty() || plan.exec_paths.is_empty() {
            return Err(Error::Plan("no command to run".into()));
        }
        if let Some(bpf) = &plan.seccomp {
            if bpf.is_empty() || bpf.len() % 8 != 0 || bpf.len() / 8 > u16::MAX as usize {
                return Err(Error::Plan("seccomp program is not a whole number of instructions".into()));
            }
        }
        Ok(Prepared {
            plan,
            argv: pointer_array(&plan.argv),
            envp: pointer_array(&plan.env),
            seccomp: plan.seccomp.as_ref().map(|bpf| libc::sock_fprog {
                len: (bpf.len() / 8) as u16,
                filter: bpf.as_ptr() as *mut libc::sock_filter,
            }),
            scrub: if plan.init { init::Scrub::of_self() } else { init::Scrub::default() },
        })
    }
}

/// Clone the container's first process per `plan` and return once it has exec'd the command.
///
/// On failure the child has been reaped and the error names the step that failed.
pub fn spawn(plan: &Plan) -> Result<Started> {
    let prepared = Prepared::new(plan)?;
    launch(&prepared).map_err(|f| f.into_error(plan))
}

/// [`spawn`] without allocating: the clone, the uid/gid maps, the child's report.
pub fn launch(p: &Prepared) -> std::result::Result<Started, Failure> {
    let plan = p.plan;
    let (parent_sock, child_sock) = socketpair()?;
    let userns = plan.namespaces & libc::CLONE_NEWUSER as u64 != 0;
    let into_cgroup = plan.cgroup_fd >= 0;
    let mut pidfd: c_int = -1;
    let mut args = child::ChildArgs {
        plan,
        sock: std::os::fd::AsRawFd::as_raw_fd(&child_sock),
        parent_sock: std::os::fd::AsRawFd::as_raw_fd(&parent_sock),
        join_cgroup: !into_cgroup && !plan.cgroup_join.is_empty(),
        wait_for_go: userns,
        unshare_cgroupns: false,
        argv: &p.argv,
        envp: &p.envp,
        seccomp: p.seccomp,
        scrub: p.scrub,
    };
    let cgroupns = plan.namespaces & libc::CLONE_NEWCGROUP as u64 != 0;
    let base_flags = (plan.namespaces & !(libc::CLONE_NEWCGROUP as u64)) | sys::CLONE_PIDFD;

    let pid = {
        let _blocked = SignalsBlocked::new();
        let mut clone_args = sys::CloneArgs {
            flags: base_flags,
            pidfd: &mut pidfd as *mut c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        if into_cgroup {
            clone_args.flags |= sys::CLONE_INTO_CGROUP;
            clone_args.cgroup = plan.cgroup_fd as u64;
            if cgroupns {
                clone_args.flags |= libc::CLONE_NEWCGROUP as u64;
            }
        } else {
            args.unshare_cgroupns = cgroupns;
        }
        // exec: the parent's thread enters the container's pid namespace for the clone (it
        // changes only where this thread's children go), and returns to its own after. A
        // network namespace made beforehand is entered the same way, so that the child is born
        // in it even when it is born in a new user namespace too (which could not join it).
        let pid_ns = plan.join.as_ref().map_or(-1, |j| j.pid_ns);
        let _pid_ns = NsRestore::enter(
            pid_ns,
            libc::CLONE_NEWPID,
            c"/proc/thread-self/ns/pid",
            "entering the container's pid namespace",
        )?;
        let _net_ns = NsRestore::enter(
            plan.netns,
            libc::CLONE_NEWNET,
            c"/proc/thread-self/ns/net",
            "entering the container's network namespace",
        )?;
        // SAFETY: the child only runs child::run, which obeys clone's rules (see its docs).
        let mut pid = unsafe { sys::clone3(&mut clone_args) };
        if pid == 0 {
            unsafe { child::run(&args) }
        }
        if pid < 0 && sys::errno() == libc::ENOSYS {
            // No clone3: fork-like clone; the child joins the cgroup by its procs file.
            args.join_cgroup = !plan.cgroup_join.is_empty();
            args.unshare_cgroupns = cgroupns;
            // SAFETY: as above.
            pid = unsafe { sys::clone_legacy(base_flags, &mut pidfd) };
            if pid == 0 {
                unsafe { child::run(&args) }
            }
        }
        if pid < 0 {
            return Err(Failure::os("clone"));
        }
        pid as libc::pid_t
    };
    drop(child_sock);
    // SAFETY: CLONE_PIDFD stored a new fd owned by us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let started = Started { pid, pidfd };
    let sock = std::os::fd::AsRawFd::as_raw_fd(&parent_sock);

    if args.wait_for_go {
        if let Err(e) = go_ahead(plan, pid, sock) {
            kill_and_reap(pid);
            return Err(e);
        }
    }
    let mut report = Report::default();
    let n = loop {
        // SAFETY: reading at most size_of::<Report>() bytes into a plain struct.
        let n = unsafe {
            libc::read(sock, &mut report as *mut Report as *mut libc::c_void, std::mem::size_of::<Report>())
        };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n == 0 {
        return Ok(started);
    }
    let failure = if n as usize == std::mem::size_of::<Report>() {
        Failure::Child(report)
    } else {
        Failure::os("reading the child's report")
    };
    kill_and_reap(pid);
    Err(failure)
}

/// The path a failed step worked on, for the error message.
fn describe(plan: &Plan, step: Step, index: u32) -> Option<String> {
    let i = index as usize;
    match step {
        Step::MountTarget | Step::Mount | Step::Remount => plan.mounts.get(i).map(|m| m.target.display()),
        Step::Mknod => plan.devices.get(i).map(|d| d.path.display()),
        Step::Symlink => plan.symlinks.get(i).map(|(_, l)| l.display()),
        Step::MaskPath => plan.masked_paths.get(i).map(|p| p.to_string_lossy().into_owned()),
        Step::ReadonlyPath => plan.readonly_paths.get(i).map(|p| p.to_string_lossy().into_owned()),
        Step::Workdir => Some(plan.cwd.display()),
        Step::CgroupJoin => plan.cgroup_join.get(i).map(|p| p.to_string_lossy().into_owned()),
        Step::Exec => plan.argv.first().map(|a| a.to_string_lossy().into_owned()),
        Step::BindRootfs | Step::OpenRootfs | Step::PivotRoot | Step::Overlay => {
            Some(plan.rootfs.to_string_lossy().into_owned())
        }
        _ => None,
    }
}

/// What the parent does while the child waits: the uid/gid maps, then go. No allocation.
fn go_ahead(plan: &Plan, pid: libc::pid_t, sock: c_int) -> std::result::Result<(), Failure> {
    let write = |file: &[u8], data: &[u8], what: &'static str| {
        let mut path = [0u8; 64];
        let fd = {
            let p = sys::proc_pid_path(pid, file, &mut path);
            // SAFETY: p is NUL-terminated in path.
            unsafe { libc::open(p, libc::O_WRONLY | libc::O_CLOEXEC) }
        };
        if fd < 0 {
            return Err(Failure::os(what));
        }
        // SAFETY: writing data's bytes to the fd just opened, then closing it.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        let failure = Failure::os(what);
        unsafe { libc::close(fd) };
        if n != data.len() as isize {
            return Err(failure);
        }
        Ok(())
    };
    if let Some(map) = &plan.gid_map {
        // Only an unprivileged writer must deny setgroups; as root we keep it, so the
        // container's supplementary groups can be set.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            write(b"setgroups", b"deny", "writing setgroups")?;
        }
        write(b"gid_map", map.as_bytes(), "writing gid_map")?;
    }
    if let Some(map) = &plan.uid_map {
        write(b"uid_map", map.as_bytes(), "writing uid_map")?;
    }
    // SAFETY: writing one byte from a local.
    let n = unsafe { libc::write(sock, b"1".as_ptr() as *const libc::c_void, 1) };
    if n != 1 {
        return Err(Failure::os("sending the go-ahead"));
    }
    Ok(())
}

pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: pid is our own child; waitpid reaps it.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && sys::errno() == libc::EINTR {}
    }
}
