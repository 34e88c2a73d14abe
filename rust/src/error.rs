//! One error type for the crate, and its single conversion into `kobako.errors` exceptions.

use std::io;

/// A set-up step of the container, reported by the child when it fails.
///
/// The numeric value travels over the sync socket; `name()` is what Python sees.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sync = 1,
    CgroupJoin,
    Cgroupns,
    Setsid,
    Console,
    Stdio,
    MountPropagation,
    Overlay,
    BindRootfs,
    OpenRootfs,
    MountTarget,
    Mount,
    Remount,
    Mknod,
    Symlink,
    PivotRoot,
    MaskPath,
    ReadonlyPath,
    ReadonlyRootfs,
    Hostname,
    Loopback,
    Rlimit,
    Workdir,
    Capabilities,
    SetGroups,
    SetGid,
    SetUid,
    NoNewPrivs,
    Seccomp,
    Init,
    Exec,
    Setns,
}

impl Step {
    pub const ALL: [Step; 32] = [
        Step::Sync,
        Step::CgroupJoin,
        Step::Cgroupns,
        Step::Setsid,
        Step::Console,
        Step::Stdio,
        Step::MountPropagation,
        Step::Overlay,
        Step::BindRootfs,
        Step::OpenRootfs,
        Step::MountTarget,
        Step::Mount,
        Step::Remount,
        Step::Mknod,
        Step::Symlink,
        Step::PivotRoot,
        Step::MaskPath,
        Step::ReadonlyPath,
        Step::ReadonlyRootfs,
        Step::Hostname,
        Step::Loopback,
        Step::Rlimit,
        Step::Workdir,
        Step::Capabilities,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::NoNewPrivs,
        Step::Seccomp,
        Step::Init,
        Step::Exec,
        Step::Setns,
    ];

    pub fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }

    /// The step's name as `kobako.errors.StartError.step` carries it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Sync => "sync",
            Step::CgroupJoin => "cgroup-join",
            Step::Cgroupns => "cgroupns",
            Step::Setsid => "setsid",
            Step::Console => "console",
            Step::Stdio => "stdio",
            Step::MountPropagation => "mount-propagation",
            Step::Overlay => "overlay",
            Step::BindRootfs => "bind-rootfs",
            Step::OpenRootfs => "open-rootfs",
            Step::MountTarget => "mount-target",
            Step::Mount => "mount",
            Step::Remount => "remount",
            Step::Mknod => "mknod",
            Step::Symlink => "symlink",
            Step::PivotRoot => "pivot_root",
            Step::MaskPath => "mask-path",
            Step::ReadonlyPath => "readonly-path",
            Step::ReadonlyRootfs => "readonly-rootfs",
            Step::Hostname => "hostname",
            Step::Loopback => "loopback",
            Step::Rlimit => "rlimit",
            Step::Workdir => "workdir",
            Step::Capabilities => "capabilities",
            Step::SetGroups => "setgroups",
            Step::SetGid => "setgid",
            Step::SetUid => "setuid",
            Step::NoNewPrivs => "no_new_privs",
            Step::Seccomp => "seccomp",
            Step::Init => "init",
            Step::Exec => "exec",
            Step::Setns => "setns",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step in the container's child process failed.
    #[error("{}", child_message(*step, *errno, path.as_deref()))]
    Child { step: Step, errno: i32, path: Option<String> },
    /// A system call made by the parent failed.
    #[error("{what}: {source}")]
    Os { what: &'static str, source: io::Error },
    /// The launch plan handed over from Python is inconsistent.
    #[error("invalid launch plan: {0}")]
    Plan(String),
    /// A seccomp profile could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A network set-up step (netlink request, namespace) failed.
    #[error("{what}: {}", strerror(*errno))]
    Net { what: String, errno: i32 },
    /// A layer could not be extracted: the entry is hostile, malformed or could not be created.
    #[error("layer {layer}: {entry}: {reason}")]
    Layer { layer: String, entry: String, reason: String },
}

/// `strerror` without io::Error's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Docker-like wording for a failed set-up step.
fn child_message(step: Step, errno: i32, path: Option<&str>) -> String {
    let path = path.unwrap_or("");
    match (step, errno) {
        (Step::Exec, libc::ENOENT) if !path.contains('/') => {
            format!("exec: \"{path}\": executable file not found in $PATH")
        }
        (Step::Exec, _) => format!("exec: \"{path}\": {}", strerror(errno).to_lowercase()),
        _ if path.is_empty() => format!("{}: {}", step.name(), strerror(errno)),
        _ => format!("{} {path}: {}", step.name(), strerror(errno)),
    }
}

impl Error {
    /// The last OS error, attributed to `what`.
    pub fn last_os(what: &'static str) -> Error {
        Error::Os { what, source: io::Error::last_os_error() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
