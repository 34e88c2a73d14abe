//! The only code that touches Python: thin shims that take owned arguments, release the GIL
//! (`py.detach`) around the blocking work, and map [`Error`] to `kobako.errors` exceptions.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::{Error, Step};
use crate::process::plan::{cstring, Caps, Device, Join, Kind, MountEntry, Overlay, Plan, RootPath};
use crate::{cgroup, layer, net, process, seccomp};

pyo3::import_exception!(kobako.errors, StartError);
pyo3::import_exception!(kobako.errors, CommandNotFound);
pyo3::import_exception!(kobako.errors, CommandNotExecutable);
pyo3::import_exception!(kobako.errors, InvalidArgument);
pyo3::import_exception!(kobako.errors, LayerError);
pyo3::import_exception!(kobako.errors, NetworkError);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let message = e.to_string();
        match e {
            Error::Child { step, errno, path } => {
                let args = (message, step.name(), errno, path);
                match (step, errno) {
                    (Step::Exec, libc::ENOENT) => CommandNotFound::new_err(args),
                    (Step::Exec, _) => CommandNotExecutable::new_err(args),
                    _ => StartError::new_err(args),
                }
            }
            Error::Os { what, source } => {
                let errno = source.raw_os_error().unwrap_or(0);
                StartError::new_err((message, what, errno, None::<String>))
            }
            Error::Layer { layer, entry, reason } => LayerError::new_err((message, layer, entry, reason)),
            Error::Net { errno, .. } => NetworkError::new_err((message, errno)),
            Error::Plan(_) | Error::Seccomp(_) => InvalidArgument::new_err(message),
        }
    }
}

/// One mount as Python hands it over: (source, destination, fstype, flags, data, is_file).
type PyMount = (Option<String>, String, Option<String>, u64, Option<String>, bool);

/// exec: (namespace fds with their CLONE_NEW* types, pid namespace fd or -1, root fd).
type PyJoin = (Vec<(i32, i32)>, i32, i32);

/// The launch plan as Python hands it over (a dict; see `kobako.runtime.launch`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct PyPlan {
    rootfs: String,
    /// (mount data, directory to chdir into first)
    overlay: Option<(String, Option<String>)>,
    argv: Vec<String>,
    env: Vec<String>,
    exec_paths: Vec<String>,
    cwd: String,
    hostname: Option<String>,
    namespaces: u64,
    uid_map: Option<String>,
    gid_map: Option<String>,
    mounts: Vec<PyMount>,
    devices: Vec<(String, u32, u32, u32)>,
    symlinks: Vec<(String, String)>,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
    readonly_rootfs: bool,
    rlimits: Vec<(u32, u64, u64)>,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    caps: (u64, u64, u64, u64, u64, u32),
    no_new_privs: bool,
    seccomp: Option<Vec<u8>>,
    tty_fd: i32,
    stdio: (i32, i32, i32),
    cgroup_fd: i32,
    cgroup_join: Vec<String>,
    init: bool,
    join: Option<PyJoin>,
    /// A network namespace to start in (-1: none; see `namespaces` for a new one).
    netns: i32,
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, Error> {
    v.iter().map(|s| cstring(s)).collect()
}

impl TryFrom<PyPlan> for Plan {
    type Error = Error;

    fn try_from(p: PyPlan) -> Result<Plan, Error> {
        let mounts = p
            .mounts
            .into_iter()
            .map(|(source, target, fstype, flags, data, is_file)| {
                Ok(MountEntry {
                    source: source.as_deref().map(cstring).transpose()?,
                    target: RootPath::new(&target)?,
                    fstype: fstype.as_deref().map(cstring).transpose()?,
                    flags: flags as libc::c_ulong,
                    data: data.as_deref().map(cstring).transpose()?,
                    kind: if is_file { Kind::File } else { Kind::Dir },
                })
            })
            .collect::<Result<_, Error>>()?;
        let devices = p
            .devices
            .into_iter()
            .map(|(path, mode, major, minor)| Ok(Device { path: RootPath::new(&path)?, mode, major, minor }))
            .collect::<Result<_, Error>>()?;
        let symlinks = p
            .symlinks
            .into_iter()
            .map(|(target, link)| Ok((cstring(&target)?, RootPath::new(&link)?)))
            .collect::<Result<_, Error>>()?;
        let (bounding, effective, permitted, inheritable, ambient, last_cap) = p.caps;
        Ok(Plan {
            rootfs: cstring(&p.rootfs)?,
            overlay: p
                .overlay
                .map(|(data, chdir)| {
                    Ok::<_, Error>(Overlay {
                        data: cstring(&data)?,
                        chdir: chdir.as_deref().map(cstring).transpose()?,
                    })
                })
                .transpose()?,
            argv: cstrings(&p.argv)?,
            env: cstrings(&p.env)?,
            exec_paths: cstrings(&p.exec_paths)?,
            cwd: RootPath::new(&p.cwd)?,
            hostname: p.hostname.as_deref().map(cstring).transpose()?,
            namespaces: p.namespaces,
            uid_map: p.uid_map,
            gid_map: p.gid_map,
            mounts,
            devices,
            symlinks,
            masked_paths: cstrings(&p.masked_paths)?,
            readonly_paths: cstrings(&p.readonly_paths)?,
            readonly_rootfs: p.readonly_rootfs,
            rlimits: p.rlimits,
            uid: p.uid,
            gid: p.gid,
            groups: p.groups,
            caps: Caps { bounding, effective, permitted, inheritable, ambient, last_cap },
            no_new_privs: p.no_new_privs,
            seccomp: p.seccomp,
            tty_fd: p.tty_fd,
            stdio: [p.stdio.0, p.stdio.1, p.stdio.2],
            cgroup_fd: p.cgroup_fd,
            cgroup_join: cstrings(&p.cgroup_join)?,
            init: p.init,
            join: p.join.map(|(namespaces, pid_ns, root)| Join { namespaces, pid_ns, root }),
            netns: p.netns,
        })
    }
}

/// Start a container's first process; returns ``(pid, pidfd)`` once it has exec'd.
#[pyfunction]
fn spawn(py: Python<'_>, plan: PyPlan) -> PyResult<(i32, i32)> {
    let plan = Plan::try_from(plan)?;
    let started = py.detach(|| process::spawn(&plan))?;
    Ok((started.pid, std::os::fd::IntoRawFd::into_raw_fd(started.pidfd)))
}

/// Start a container under a new monitor (see `process::detach`). ``fds`` are ``(out, err,
/// in, listen, null)``: the read ends of its stdout and stderr (``err`` -1 with a terminal,
/// whose master is ``out``), which the monitor copies to its log and its attach clients; the
/// write end of its stdin pipe (-1: none); the monitor's attach socket, listening (-1: none);
/// /dev/null. Returns ``(pid, monitor pid)``.
#[pyfunction]
fn spawn_detached(
    py: Python<'_>,
    plan: PyPlan,
    monitor_argv: Vec<String>,
    monitor_env: Vec<String>,
    fds: (i32, i32, i32, i32, i32),
) -> PyResult<(i32, i32)> {
    let plan = Plan::try_from(plan)?;
    let (out_fd, err_fd, in_fd, listen_fd, null_fd) = fds;
    let monitor = process::detach::Monitor {
        exe: process::detach::monitor_exe()?,
        argv: cstrings(&monitor_argv)?,
        env: cstrings(&monitor_env)?,
        out_fd,
        err_fd,
        in_fd,
        listen_fd,
        null_fd,
    };
    Ok(py.detach(|| process::detach::spawn_detached(&plan, &monitor))?)
}

fn ipv4(text: &str) -> PyResult<std::net::Ipv4Addr> {
    text.parse().map_err(|_| InvalidArgument::new_err(format!("{text:?} is not an IPv4 address")))
}

fn cidr(addr: &str, prefix: u8) -> PyResult<net::Cidr> {
    if prefix > 32 {
        return Err(InvalidArgument::new_err(format!("prefix length {prefix} is out of range")));
    }
    Ok(net::Cidr { addr: ipv4(addr)?, prefix })
}

/// A new network namespace with ``lo`` up; returns an fd holding it (the caller closes it).
#[pyfunction]
fn netns_new(py: Python<'_>) -> PyResult<i32> {
    let fd = py.detach(net::netns_new)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

/// Make sure bridge ``name`` exists, carries ``addr/prefix`` and is up; True if created now.
#[pyfunction]
#[pyo3(signature = (name, addr, prefix, mtu=None))]
fn bridge_ensure(py: Python<'_>, name: String, addr: String, prefix: u8, mtu: Option<u32>) -> PyResult<bool> {
    let cidr = cidr(&addr, prefix)?;
    Ok(py.detach(|| net::bridge_ensure(&name, cidr, mtu))?)
}

/// Delete link ``name`` (in the namespace of ``netns`` when given); False if there was none.
#[pyfunction]
#[pyo3(signature = (name, netns=-1))]
fn link_delete(py: Python<'_>, name: String, netns: i32) -> PyResult<bool> {
    Ok(py.detach(|| if netns >= 0 { net::link_delete_in(netns, &name) } else { net::link_delete(&name) })?)
}

/// A veth pair from bridge ``bridge`` (host end ``host``) into the namespace ``netns`` (end
/// ``name`` there, with ``addr/prefix``, up, and a default route via ``gateway`` if given).
#[pyfunction]
#[pyo3(signature = (netns, host, bridge, name, addr, prefix, gateway=None, mac=None, mtu=None))]
#[allow(clippy::too_many_arguments)]
fn veth_attach(
    py: Python<'_>,
    netns: i32,
    host: String,
    bridge: String,
    name: String,
    addr: String,
    prefix: u8,
    gateway: Option<String>,
    mac: Option<[u8; 6]>,
    mtu: Option<u32>,
) -> PyResult<()> {
    let ep = net::Endpoint {
        name,
        cidr: cidr(&addr, prefix)?,
        gateway: gateway.as_deref().map(ipv4).transpose()?,
        mac,
        mtu,
    };
    Ok(py.detach(|| net::veth_attach(netns, &host, &bridge, &ep))?)
}

/// One seccomp rule as Python hands it over: (names, action, errno, [(index, op, value, value_two)]).
type PyRule = (Vec<String>, String, Option<u32>, Vec<(u32, String, u64, u64)>);

/// Compile a seccomp profile (already evaluated for this host) to a BPF program.
#[pyfunction]
fn compile_seccomp<'py>(
    py: Python<'py>,
    default_action: String,
    default_errno: Option<u32>,
    arches: Vec<String>,
    rules: Vec<PyRule>,
) -> PyResult<Bound<'py, PyBytes>> {
    let profile = seccomp::Profile {
        default_action,
        default_errno,
        arches,
        rules: rules
            .into_iter()
            .map(|(names, action, errno, args)| seccomp::Rule {
                names,
                action,
                errno,
                args: args
                    .into_iter()
                    .map(|(index, op, value, value_two)| seccomp::ArgCond { index, op, value, value_two })
                    .collect(),
            })
            .collect(),
    };
    let bpf = py.detach(|| seccomp::compile(&profile))?;
    Ok(PyBytes::new(py, &bpf))
}

/// Read a file inside ``root`` (symlinks resolved as if ``root`` were ``/``), at most ``limit``
/// bytes; ``None`` if it does not exist.
#[pyfunction]
fn read_in_root<'py>(
    py: Python<'py>,
    root: String,
    path: String,
    limit: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let data = py.detach(|| crate::rootfs::read_in_root(&root, &path, limit));
    match data {
        Ok(Some(bytes)) => Ok(Some(PyBytes::new(py, &bytes))),
        Ok(None) => Ok(None),
        Err(e) => Err(PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("{path}: {e}")))),
    }
}

/// Open ``path`` resolved inside the directory ``root_fd`` as if it were ``/``: no ``..`` or
/// symlink in it leads out, and no /proc magic link is followed (openat2 with RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS). Returns the new fd, close-on-exec.
#[pyfunction]
#[pyo3(signature = (root_fd, path, flags, mode=0))]
fn open_in_root(py: Python<'_>, root_fd: i32, path: PathBuf, flags: i32, mode: u32) -> PyResult<i32> {
    use std::os::unix::ffi::OsStrExt;
    let shown = path.to_string_lossy().into_owned();
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| InvalidArgument::new_err(format!("{shown:?} contains a NUL byte")))?;
    let opened = py.detach(|| {
        // openat2 fails with EAGAIN when a rename races with resolving `..`: try again.
        let mut errno = libc::EAGAIN;
        for _ in 0..64 {
            // SAFETY: c_path is NUL-terminated; the kernel checks root_fd.
            let fd = unsafe { crate::sys::open_in_root_mode(root_fd, c_path.as_ptr(), flags, mode) };
            if fd >= 0 {
                return Ok(fd);
            }
            errno = crate::sys::errno();
            if errno != libc::EAGAIN {
                break;
            }
        }
        Err(errno)
    });
    opened.map_err(|errno| {
        let message = std::io::Error::from_raw_os_error(errno).to_string();
        let message = message.split(" (os error").next().unwrap_or(&message).to_string();
        PyOSError::new_err((errno, message, shown))
    })
}

/// Attach a cgroup v2 device allowlist to the cgroup directory ``cgroup_fd``.
///
/// ``rules`` are ``(type, major, minor, access)``: type ``"a"``, ``"b"`` or ``"c"``; -1 for any
/// major/minor; access a string of ``r``, ``w``, ``m``.
#[pyfunction]
fn attach_device_filter(
    py: Python<'_>,
    cgroup_fd: i32,
    rules: Vec<(String, i64, i64, String)>,
) -> PyResult<()> {
    let rules = rules
        .into_iter()
        .map(|(kind, major, minor, access)| {
            let kind = match kind.as_str() {
                "a" | "b" | "c" => kind.as_bytes()[0],
                _ => return Err(Error::Plan(format!("device type {kind:?} is not a, b or c"))),
            };
            let mut bits = 0;
            for c in access.chars() {
                bits |= match c {
                    'm' => 1,
                    'r' => 2,
                    'w' => 4,
                    _ => return Err(Error::Plan(format!("device access {access:?} is not of r, w, m"))),
                };
            }
            Ok(cgroup::DeviceRule { kind, major, minor, access: bits })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    py.detach(|| cgroup::attach(cgroup_fd, &rules))?;
    Ok(())
}

/// An owned duplicate of the caller's fd (theirs stays open), as a File.
fn dup_fd(fd: i32, what: &str) -> PyResult<File> {
    if fd < 0 {
        return Err(InvalidArgument::new_err(format!("{what} {fd} is not a file descriptor")));
    }
    // SAFETY: plain integer arguments; a closed fd makes fcntl fail with EBADF.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        let e = std::io::Error::last_os_error();
        return Err(InvalidArgument::new_err(format!("{what} {fd}: {e}")));
    }
    // SAFETY: dup was just made and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(dup) }))
}

/// Extract the layer read from ``source_fd`` (to its end) into the directory ``target``.
///
/// Returns ``(blob digest, diff ID, bytes read, entries, size)``. Every byte read is also written to
/// ``tee_fd`` when given. Neither fd is closed.
#[pyfunction]
#[pyo3(signature = (source_fd, target, layer, *, tee_fd=None))]
fn extract_layer(
    py: Python<'_>,
    source_fd: i32,
    target: String,
    layer: String,
    tee_fd: Option<i32>,
) -> PyResult<(String, String, u64, u64, u64)> {
    let source = dup_fd(source_fd, "source_fd")?;
    let mut tee = tee_fd.map(|fd| dup_fd(fd, "tee_fd")).transpose()?;
    let out = py.detach(|| {
        let tee = tee.as_mut().map(|t| t as &mut (dyn std::io::Write + Send));
        layer::extract(source, tee, Path::new(&target), &layer)
    })?;
    Ok((out.compressed_digest, out.diff_id, out.compressed_size, out.entries, out.size))
}

/// Write the tree at ``source`` as a layer to ``out_fd`` (not closed).
///
/// Returns ``(blob digest, diff ID, bytes written)``.
#[pyfunction]
#[pyo3(signature = (source, out_fd, *, compression="none", overlay_whiteouts=false, level=None))]
fn pack_layer(
    py: Python<'_>,
    source: String,
    out_fd: i32,
    compression: &str,
    overlay_whiteouts: bool,
    level: Option<i32>,
) -> PyResult<(String, String, u64)> {
    let compression = match (compression, level) {
        ("none", None) => layer::Compression::None,
        ("none", Some(l)) => {
            return Err(InvalidArgument::new_err(format!("level {l} given for an uncompressed layer")))
        }
        ("gzip", None) => layer::Compression::Gzip(6),
        ("gzip", Some(l @ 0..=9)) => layer::Compression::Gzip(l as u32),
        ("zstd", None) => layer::Compression::Zstd(3),
        ("zstd", Some(l @ 1..=22)) => layer::Compression::Zstd(l),
        ("gzip" | "zstd", Some(l)) => {
            return Err(InvalidArgument::new_err(format!(
                "{compression} level {l} is out of range (gzip 0-9, zstd 1-22)"
            )))
        }
        _ => {
            return Err(InvalidArgument::new_err(format!(
                "compression {compression:?} is not none, gzip or zstd"
            )))
        }
    };
    let out = dup_fd(out_fd, "out_fd")?;
    let packed = py.detach(|| layer::pack(Path::new(&source), out, compression, overlay_whiteouts))?;
    Ok((packed.compressed_digest, packed.diff_id, packed.size))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(attach_device_filter, m)?)?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add_function(wrap_pyfunction!(netns_new, m)?)?;
    m.add_function(wrap_pyfunction!(bridge_ensure, m)?)?;
    m.add_function(wrap_pyfunction!(link_delete, m)?)?;
    m.add_function(wrap_pyfunction!(veth_attach, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_detached, m)?)?;
    m.add_function(wrap_pyfunction!(compile_seccomp, m)?)?;
    m.add_function(wrap_pyfunction!(read_in_root, m)?)?;
    m.add_function(wrap_pyfunction!(open_in_root, m)?)?;
    m.add_function(wrap_pyfunction!(extract_layer, m)?)?;
    m.add_function(wrap_pyfunction!(pack_layer, m)?)?;
    Ok(())
}
