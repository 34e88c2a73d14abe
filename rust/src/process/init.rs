//! `--init`: a tiny PID 1 that forwards signals to the command and reaps every zombie.
//!
//! It is the container's first process itself, not an exec'd helper: after set-up it forks;
//! the new process goes on to exec the command, and this one waits for signals with all of them
//! blocked (so that, as PID 1 of the namespace, it still receives them) until the command exits,
//! then exits with the command's status, as tini does.

use std::ptr;

use libc::c_int;

use crate::error::Step;
use crate::sys;

/// Fork; return in the child (which will exec), supervise in the parent (never returns).
///
/// # Safety
/// Called only in the container's child, with every signal blocked.
pub unsafe fn fork_and_supervise(sock: c_int) {
    let mut args = sys::CloneArgs { exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    let mut pid = sys::clone3(&mut args);
    if pid < 0 && sys::errno() == libc::ENOSYS {
        pid = sys::clone_legacy(0, ptr::null_mut());
    }
    if pid < 0 {
        super::child_fail(sock, Step::Init, sys::errno());
    }
    if pid == 0 {
        return;
    }
    // The exec'ing child holds the sync socket until execve; the init must not keep it open.
    libc::close(sock);
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
