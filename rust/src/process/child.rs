//! The container's first process, from clone to execve.
//!
//! Hard rules: everything was computed by the parent ([`Plan`]); no allocation, no locks, no
//! Python; a failure is written to the sync socket as (step, errno, index) and the child exits.
//! A successful execve closes the (CLOEXEC) socket, which the parent reads as success.

use std::ptr;

use libc::{c_char, c_int};

use super::plan::{Join, Kind, Plan};
use super::{init, Report};
use crate::error::Step;
use crate::rootfs::{self, Failure};
use crate::sys;

/// What the child needs beside the plan, all prepared before clone.
pub struct ChildArgs<'a> {
    pub plan: &'a Plan,
    pub sock: c_int,
    /// The parent's end of the socket pair: closed first, so that the parent's death reads as
    /// EOF here rather than leaving us waiting for a go-ahead forever.
    pub parent_sock: c_int,
    /// Join the cgroup through `plan.cgroup_join` (it was not cloned into it).
    pub join_cgroup: bool,
    /// Wait for the parent's go-ahead (uid/gid maps) before the set-up.
    pub wait_for_go: bool,
    /// unshare(CLONE_NEWCGROUP) after the go-ahead (the cgroup was not set at clone).
    pub unshare_cgroupns: bool,
    pub argv: &'a [*const c_char],
    pub envp: &'a [*const c_char],
    pub seccomp: Option<libc::sock_fprog>,
    /// What `--init` blanks of kobako's own command line and environment.
    pub scrub: init::Scrub,
}

/// Report a failure to the parent and exit.
fn die(sock: c_int, step: Step, errno: c_int, index: u32, code: c_int) -> ! {
    let report = Report { step: step as u32, errno, index };
    // SAFETY: writing a plain struct to our socket, then exiting without running destructors.
    unsafe {
        libc::write(sock, &report as *const Report as *const libc::c_void, std::mem::size_of::<Report>());
        libc::_exit(code)
    }
}

/// Run the child. Never returns.
///
/// # Safety
/// Must be called only in the freshly cloned child, as described in the module docs.
pub unsafe fn run(a: &ChildArgs) -> ! {
    let result = match &a.plan.join {
        Some(join) => setup_exec(a, join),
        None => setup(a),
    };
    match result {
        Ok(()) => {}
        Err((step, errno, index)) => die(a.sock, step, errno, index, 1),
    }
    exec(a)
}

type Indexed = (Step, c_int, u32);

fn at(index: usize) -> impl Fn(Failure) -> Indexed {
    move |(step, errno)| (step, errno, index as u32)
}

fn check(rc: c_int, step: Step) -> Result<(), Indexed> {
    if rc < 0 {
        Err((step, sys::errno(), 0))
    } else {
        Ok(())
    }
}

unsafe fn setup(a: &ChildArgs) -> Result<(), Indexed> {
    let p = a.plan;
    libc::close(a.parent_sock);
    libc::umask(0);
    if a.join_cgroup {
        // Done first, with the host's credentials, before a user namespace's maps apply.
        join_cgroup(p)?;
    }
    if a.wait_for_go {
        let mut go = 0u8;
        loop {
            let n = libc::read(a.sock, &mut go as *mut u8 as *mut libc::c_void, 1);
            if n == 1 {
                break;
            }
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            // The parent gave up (its error is its own to report): leave quietly.
            libc::_exit(1);
        }
    }
    if p.namespaces & libc::CLONE_NEWUSER as u64 != 0 {
        // Our credentials are still the host's, unmapped in the new namespace: become its root
        // so that files we create (mountpoints, nodes) get a mapped owner.
        check(libc::setresgid(0, 0, 0), Step::SetGid)?;
        check(libc::setresuid(0, 0, 0), Step::SetUid)?;
    }
    if a.unshare_cgroupns {
        check(libc::unshare(libc::CLONE_NEWCGROUP), Step::Cgroupns)?;
    }
    check(libc::setsid(), Step::Setsid)?;
    set_stdio(p)?;

    // Root filesystem.
    let flags = libc::MS_REC | libc::MS_PRIVATE;
    check(libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), flags, ptr::null()), Step::MountPropagation)?;
    if let Some(o) = &p.overlay {
        if let Some(dir) = &o.chdir {
            check(libc::chdir(dir.as_ptr()), Step::Overlay)?;
        }
        let data = o.data.as_ptr() as *const libc::c_void;
        check(
            libc::mount(c"overlay".as_ptr(), p.rootfs.as_ptr(), c"overlay".as_ptr(), 0, data),
            Step::Overlay,
        )?;
    }
    let bind = libc::MS_BIND | libc::MS_REC;
    check(
        libc::mount(p.rootfs.as_ptr(), p.rootfs.as_ptr(), ptr::null(), bind, ptr::null()),
        Step::BindRootfs,
    )?;
    let root = libc::open(p.rootfs.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
    check(root, Step::OpenRootfs)?;
    for (i, m) in p.mounts.iter().enumerate() {
        rootfs::mount(root, m).map_err(at(i))?;
    }
    for (i, d) in p.devices.iter().enumerate() {
        rootfs::mknod(root, &d.path, d.mode, d.major, d.minor).map_err(at(i))?;
    }
    for (i, (target, link)) in p.symlinks.iter().enumerate() {
        rootfs::symlink(root, target, link).map_err(at(i))?;
    }
    let cwd = rootfs::ensure(root, &p.cwd, Kind::Dir).map_err(|(_, e)| (Step::Workdir, e, 0))?;
    libc::close(cwd);
    rootfs::pivot(root).map_err(at(0))?;
    libc::close(root);
    for (i, path) in p.masked_paths.iter().enumerate() {
        rootfs::mask(path).map_err(at(i))?;
    }
    for (i, path) in p.readonly_paths.iter().enumerate() {
        rootfs::readonly(path, Step::ReadonlyPath).map_err(at(i))?;
    }
    if p.readonly_rootfs {
        rootfs::readonly_root().map_err(at(0))?;
    }

    // The rest of the environment.
    if let Some(h) = &p.hostname {
        check(libc::sethostname(h.as_ptr(), h.as_bytes().len()), Step::Hostname)?;
    }
    if p.namespaces & libc::CLONE_NEWNET as u64 != 0 {
        loopback_up().map_err(|e| (Step::Loopback, e, 0))?;
    }
    set_rlimits(p)?;
    check(libc::chdir(p.cwd.absolute.as_ptr()), Step::Workdir)?;

    confine(a)
}

/// `exec`: into the running container's cgroup, namespaces and root, then the same
/// confinement as its first process.
unsafe fn setup_exec(a: &ChildArgs, join: &Join) -> Result<(), Indexed> {
    let p = a.plan;
    libc::close(a.parent_sock);
    // Until execve, this process holds kobako's memory and is in the container's pid
    // namespace: no process there may ptrace it or read its /proc/PID/mem.
    check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0), Step::Setns)?;
    if a.join_cgroup {
        join_cgroup(p)?;
    }
    for (i, &(fd, kind)) in join.namespaces.iter().enumerate() {
        if libc::setns(fd, kind) != 0 {
            return Err((Step::Setns, sys::errno(), i as u32));
        }
    }
    check(libc::fchdir(join.root), Step::Setns)?;
    check(libc::chroot(c".".as_ptr()), Step::Setns)?;
    check(libc::setsid(), Step::Setsid)?;
    set_stdio(p)?;
    set_rlimits(p)?;
    check(libc::chdir(p.cwd.absolute.as_ptr()), Step::Workdir)?;
    confine(a)
}

/// Join the cgroup by writing 0 (this single thread) to each file: unlike writing a pid to
/// cgroup.procs it takes no global threadgroup lock, so it costs no RCU grace period.
unsafe fn join_cgroup(p: &Plan) -> Result<(), Indexed> {
    for (i, file) in p.cgroup_join.iter().enumerate() {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) != 1 {
            return Err((Step::CgroupJoin, sys::errno(), i as u32));
        }
        libc::close(fd);
    }
    Ok(())
}

/// The terminal as controlling terminal and stdio, or the plan's fds as 0, 1, 2.
unsafe fn set_stdio(p: &Plan) -> Result<(), Indexed> {
    if p.tty_fd >= 0 {
        check(libc::ioctl(p.tty_fd, libc::TIOCSCTTY, 0), Step::Console)?;
        for fd in 0..3 {
            check(libc::dup2(p.tty_fd, fd), Step::Console)?;
        }
    } else {
        for (i, &fd) in p.stdio.iter().enumerate() {
            if fd >= 0 && fd != i as c_int {
                check(libc::dup2(fd, i as c_int), Step::Stdio)?;
            }
        }
    }
    Ok(())
}

unsafe fn set_rlimits(p: &Plan) -> Result<(), Indexed> {
    for (i, &(resource, soft, hard)) in p.rlimits.iter().enumerate() {
        let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        if libc::setrlimit(resource as _, &lim) != 0 {
            return Err((Step::Rlimit, sys::errno(), i as u32));
        }
    }
    Ok(())
}

/// Seccomp, the bounding set, user and groups, capabilities, no_new_privs. Without
/// no_new_privs, installing a filter needs CAP_SYS_ADMIN: it goes first then.
unsafe fn confine(a: &ChildArgs) -> Result<(), Indexed> {
    let p = a.plan;
    if !p.no_new_privs {
        install_seccomp(a)?;
    }
    drop_privileges(p)?;
    if p.no_new_privs {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), Step::NoNewPrivs)?;
        install_seccomp(a)?;
    }
    Ok(())
}

unsafe fn install_seccomp(a: &ChildArgs) -> Result<(), Indexed> {
    if let Some(prog) = &a.seccomp {
        let rc = libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            prog as *const libc::sock_fprog,
            0,
            0,
        );
        check(rc, Step::Seccomp)?;
    }
    Ok(())
}

/// Bounding set, user and groups, then the capability sets.
unsafe fn drop_privileges(p: &Plan) -> Result<(), Indexed> {
    let c = &p.caps;
    for cap in 0..=c.last_cap {
        if c.bounding & (1u64 << cap) == 0 {
            let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            if rc != 0 && sys::errno() != libc::EINVAL {
                return Err((Step::Capabilities, sys::errno(), cap));
            }
        }
    }
    // In a user namespace whose setgroups is denied (an unprivileged parent), keep what we have.
    let rc = libc::setgroups(p.groups.len(), p.groups.as_ptr());
    let userns = p.namespaces & libc::CLONE_NEWUSER as u64 != 0;
    if rc != 0 && !(userns && sys::errno() == libc::EPERM) {
        return Err((Step::SetGroups, sys::errno(), 0));
    }
    check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), Step::Capabilities)?;
    check(libc::setresgid(p.gid, p.gid, p.gid), Step::SetGid)?;
    check(libc::setresuid(p.uid, p.uid, p.uid), Step::SetUid)?;
    check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0), Step::Capabilities)?;
    check(sys::capset(c.effective, c.permitted, c.inheritable), Step::Capabilities)?;
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
    check(libc::prctl(libc::PR_CAP_AMBIENT, clear, 0, 0, 0), Step::Capabilities)?;
    for cap in 0..=c.last_cap {
        if c.ambient & (1u64 << cap) != 0 {
            let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
            check(libc::prctl(libc::PR_CAP_AMBIENT, raise, cap as libc::c_ulong, 0, 0), Step::Capabilities)?;
        }
    }
    Ok(())
}

/// `struct ifreq` with the flags member, for SIOC[GS]IFFLAGS.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Bring `lo` up in the new network namespace.
unsafe fn loopback_up() -> Result<(), c_int> {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if s < 0 {
        return Err(sys::errno());
    }
    let mut req = IfreqFlags { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    let mut rc = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
    if rc == 0 {
        req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        rc = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
    }
    let err = sys::errno();
    libc::close(s);
    if rc != 0 {
        return Err(err);
    }
    Ok(())
}

/// Signals back to default, fds ≥ 3 close on exec, umask 022, then execve each candidate path.
unsafe fn exec(a: &ChildArgs) -> ! {
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    if sys::close_range(3, u32::MAX, sys::CLOSE_RANGE_CLOEXEC) != 0 {
        for fd in 3..4096 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    libc::umask(0o022);
    if a.plan.init {
        init::fork_and_supervise(a.sock, &a.scrub);
    }
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut all);
    libc::sigprocmask(libc::SIG_SETMASK, &all, ptr::null_mut());

    let mut errno = libc::ENOENT;
    for path in &a.plan.exec_paths {
        libc::execve(path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
        let e = sys::errno();
        // Like execvp: keep looking past missing entries, remember anything more telling.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            errno = e;
        }
    }
    let code = if errno == libc::ENOENT { 127 } else { 126 };
    die(a.sock, Step::Exec, errno, 0, code)
}
