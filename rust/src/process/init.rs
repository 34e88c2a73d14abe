//! `--init`: a tiny PID 1 that forwards signals to the command and reaps every zombie.
//!
//! It is the container's first process itself, not an exec'd helper: after set-up it forks;
//! the new process goes on to exec the command, and this one waits for signals with all of them
//! blocked (so that, as PID 1 of the namespace, it still receives them) until the command exits,
//! then exits with the command's status, as tini does.

use libc::c_int;

use crate::error::Step;
use crate::sys;

/// The memory behind the process's command line and environment, which /proc/PID/cmdline
/// and /proc/PID/environ show: kobako's own, inherited by the init (it never execs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrub {
    pub arg: (usize, usize),
    pub env: (usize, usize),
}

impl Scrub {
    /// Read fields 48-51 of /proc/self/stat (arg_start, arg_end, env_start, env_end).
    /// In the parent, before clone: the child is a copy of this memory.
    pub fn of_self() -> Scrub {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let f: Vec<usize> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        // after the ")" the fields start at number 3
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        Scrub { arg: (field(48), field(49)), env: (field(50), field(51)) }
    }

    /// Overwrite the command line with `kobako-init` and blank the environment, so that the
    /// container sees nothing of kobako's own (paths, variables).
    ///
    /// # Safety
    /// Only in a process whose memory is a copy of the one `of_self` read.
    unsafe fn apply(&self) {
        const NAME: &[u8] = b"kobako-init\0";
        for (range, name) in [(self.arg, NAME), (self.env, &b""[..])] {
            let (start, end) = range;
            if start == 0 || end <= start {
                continue;
            }
            let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
            area.fill(0);
            let n = name.len().min(area.len());
            area[..n].copy_from_slice(&name[..n]);
        }
    }
}

/// Fork; return in the child (which will exec), supervise in the parent (never returns).
///
/// # Safety
/// Called only in the container's child, with every signal blocked.
pub unsafe fn fork_and_supervise(sock: c_int, scrub: &Scrub) {
    let pid = sys::fork();
    if pid < 0 {
        super::child_fail(sock, Step::Init, sys::errno());
    }
    if pid == 0 {
        return;
    }
    // The exec'ing child holds the sync socket until execve; the init must not keep it open.
    libc::close(sock);
    scrub.apply();
    // The rest of kobako's memory is still mapped here: not dumpable means no process in the
    // container can ptrace this one or read its /proc/1/mem and /proc/1/maps.
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    supervise(pid as libc::pid_t)
}

unsafe fn supervise(main: libc::pid_t) -> ! {
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    loop {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigwaitinfo(&all, &mut info);
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            libc::kill(main, sig);
            continue;
        }
        loop {
            let mut status: c_int = 0;
            let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if pid <= 0 {
                break;
            }
            if pid == main {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                libc::_exit(code);
            }
        }
    }
}
