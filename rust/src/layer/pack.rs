//! Packing a directory tree into a layer: the reverse of [`super::extract`].
//!
//! [`pack`] walks the tree by *at() calls from directory fds (never following a symlink), in
//! byte order of names, and writes a PAX tar: long names and link targets, large ids and
//! xattrs (`SCHILY.xattr.*`) go in PAX records, hard links (by device and inode) become links
//! to the first path seen. The same tree gives the same bytes: real modes, owners and mtimes
//! (whole seconds), no user or group names, no atime or ctime. With `overlay_whiteouts`, the
//! tree is an overlayfs upper directory and its whiteouts become OCI's (`.wh.NAME`,
//! `DIR/.wh..wh..opq`), its `trusted.overlay.*` xattrs dropped.
//!
//! Compression, the blob's digest and the output run on a scoped second thread; this thread
//! walks, reads files and hashes the tar.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::fsops::Dir;
use super::stream::hex;
use crate::error::{strerror, Error};
use crate::sys::errno;

/// How the tar is compressed, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip at a level of 0 to 9.
    Gzip(u32),
    /// zstd at a level of 1 to 22 (with a content checksum, as the `zstd` tool writes).
    Zstd(i32),
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
    /// `sha256:<hex>` of the bytes written (equal to `diff_id` uncompressed).
    pub compressed_digest: String,
    /// Bytes written to the output.
    pub size: u64,
}

/// Bytes of tar per chunk handed to the compressing thread.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the threads.
const DEPTH: usize = 4;
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Write the tree at `source` (its contents: the root itself has no entry) as a layer to `out`.
///
/// Errors name `source` as the layer and the entry that could not be read (`<stream>` when
/// writing or compressing failed).
pub fn pack(
    source: &Path,
    out: impl Write + Send,
    compression: Compression,
    overlay_whiteouts: bool,
) -> Result<Packed, Error> {
    let fail = |entry: &str, reason: String| Error::Layer {
        layer: source.display().to_string(),
        entry: entry.to_string(),
        reason,
    };
    let root = Dir::open_root(source).map_err(|e| fail(".", e.to_string()))?;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let (free_tx, free_rx) = mpsc::channel();
        let writer = scope.spawn(move || compress(rx, free_tx, out, compression));
        let mut walker = Walker {
            tar: TarSink { tx, free: free_rx, buf: Vec::with_capacity(CHUNK), hash: Sha256::new() },
            links: HashMap::new(),
            overlay: overlay_whiteouts,
            data: vec![0u8; 1 << 17],
        };
        let mut path = Vec::new();
        let walked = walker.walk(&root, &mut path).and_then(|()| {
            // The end of the archive: two zero blocks.
            walker.tar.write_all(&[0u8; 1024]).map_err(|e| (String::from("<stream>"), e.to_string()))?;
            walker.tar.flush().map_err(|e| (String::from("<stream>"), e.to_string()))
        });
        let diff_id = hex(&std::mem::take(&mut walker.tar.hash).finalize());
        // Dropping the walker closes the channel: the writer finishes the stream.
        drop(walker);
        let written = writer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        // A writer's failure comes first: the walker then only saw the channel close.
        let (blob, size) = written.map_err(|e| fail("<stream>", e.to_string()))?;
        walked.map_err(|(entry, reason)| fail(&entry, reason))?;
        Ok(Packed { compressed_digest: blob.unwrap_or_else(|| diff_id.clone()), diff_id, size })
    })
}

/// Compress the chunks from `rx` into `out`; return the blob's digest (None uncompressed: it
/// is the tar's) and its size.
fn compress(
    rx: Receiver<Vec<u8>>,
    free: Sender<Vec<u8>>,
    out: impl Write,
    compression: Compression,
) -> io::Result<(Option<String>, u64)> {
    let hash = (compression != Compression::None).then(Sha256::new);
    let counted = BufWriter::with_capacity(1 << 20, Counting { inner: out, hash, written: 0 });
    let feed = |enc: &mut dyn Write| -> io::Result<()> {
        for chunk in &rx {
            enc.write_all(&chunk)?;
            let _ = free.send(chunk);
        }
        Ok(())
    };
    let mut counted = match compression {
        Compression::None => {
            let mut w = counted;
            feed(&mut w)?;
            w
        }
        Compression::Gzip(level) => {
            let mut enc = flate2::write::GzEncoder::new(counted, flate2::Compression::new(level));
            feed(&mut enc)?;
            enc.finish()?
        }
        Compression::Zstd(level) => {
            let mut enc = zstd::stream::write::Encoder::new(counted, level)?;
            enc.include_checksum(true)?;
            // Any number of workers (at least one) gives the same bytes.
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            enc.multithread(workers as u32)?;
            feed(&mut enc)?;
            enc.finish()?
        }
    };
    counted.flush()?;
    let counted = counted.into_inner().map_err(|e| e.into_error())?;
    Ok((counted.hash.map(|h| hex(&h.finalize())), counted.written))
}

/// The output: counted and hashed as written.
struct Counting<W> {
    inner: W,
    hash: Option<Sha256>,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hash) = self.hash.as_mut() {
            hash.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tar as written by the walker: hashed, and sent to the compressing thread in chunks.
struct TarSink {
    tx: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    hash: Sha256,
}

impl Write for TarSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hash.update(&self.buf);
        let mut next = self.free.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        // The writer stopped: its own error says why.
        self.tx.send(full).map_err(|_| io::Error::other("output stopped"))
    }
}

/// An entry's header fields, as stat gives them.
struct Fields<'a> {
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: &'a [u8],
    rdev: libc::dev_t,
}

impl Fields<'_> {
    fn of(st: &libc::stat, kind: EntryType) -> Fields<'static> {
        Fields {
            kind,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: st.st_mtime,
            size: 0,
            link: b"",
            rdev: st.st_rdev,
        }
    }
}

type Failure = (String, String);
/// Xattr names (without their namespace's PAX prefix) and values.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

struct Walker {
    tar: TarSink,
    /// The first path of each inode with more than one link, by (device, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    overlay: bool,
    /// The buffer file contents are read through.
    data: Vec<u8>,
}

impl Walker {
    /// Write the entries below `dir`, whose path in the tar is `path` (empty, or ending in `/`).
    fn walk(&mut self, dir: &Dir, path: &mut Vec<u8>) -> Result<(), Failure> {
        let at = |path: &[u8], reason: String| (String::from_utf8_lossy(path).into_owned(), reason);
        let mut names = dir.list().map_err(|e| at(path, e))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let base = path.len();
        for name in names {
            path.truncate(base);
            path.extend_from_slice(name.as_bytes());
            let st = lstat(dir, &name).map_err(|e| at(path, e))?;
            self.entry(dir, &name, &st, path).map_err(|e| at(path, e))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let child = dir.open_child_dir(&name).map_err(|e| at(path, e))?;
                path.push(b'/');
                self.walk(&child, path)?;
            }
        }
        path.truncate(base);
        Ok(())
    }

    /// Write the entry for `name` in `dir` (at `path`) and, for a file, its contents.
    fn entry(&mut self, dir: &Dir, name: &CStr, st: &libc::stat, path: &[u8]) -> Result<(), String> {
        let fmt = st.st_mode & libc::S_IFMT;
        if self.overlay && fmt == libc::S_IFCHR && st.st_rdev == 0 {
            // An overlayfs whiteout (possibly a link to a shared whiteout inode).
            let mut wh = path[..path.len() - name.to_bytes().len()].to_vec();
            wh.extend_from_slice(b".wh.");
            wh.extend_from_slice(name.to_bytes());
            let f = Fields { mode: 0o600, ..Fields::of(st, EntryType::Regular) };
            return self.header(&wh, &f, &Vec::new());
        }
        if fmt != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.header(
                    path,
                    &Fields { link: &first, ..Fields::of(st, EntryType::Link) },
                    &Vec::new(),
                );
            }
            self.links.insert(key, path.to_vec());
        }
        let mut xattrs = xattrs(dir, name)?;
        let mut opaque = false;
        if self.overlay {
            opaque = xattrs.iter().any(|(k, v)| k == OPAQUE_XATTR && v == b"y");
            xattrs.retain(|(k, _)| !k.starts_with(b"trusted.overlay."));
        }
        match fmt {
            libc::S_IFDIR => {
                let mut dir_path = path.to_vec();
                dir_path.push(b'/');
                let f = Fields::of(st, EntryType::Directory);
                self.header(&dir_path, &f, &xattrs)?;
                if opaque {
                    dir_path.extend_from_slice(b".wh..wh..opq");
                    let marker = Fields { mode: f.mode & 0o777, ..Fields::of(st, EntryType::Regular) };
                    self.header(&dir_path, &marker, &Vec::new())?;
                }
                Ok(())
            }
            libc::S_IFREG => {
                let size = st.st_size as u64;
                let file = open_file(dir, name)?;
                self.header(path, &Fields { size, ..Fields::of(st, EntryType::Regular) }, &xattrs)?;
                self.contents(&file, size)
            }
            libc::S_IFLNK => {
                let target = readlink(dir, name, st.st_size as usize)?;
                self.header(path, &Fields { link: &target, ..Fields::of(st, EntryType::Symlink) }, &xattrs)
            }
            libc::S_IFCHR => self.header(path, &Fields::of(st, EntryType::Char), &xattrs),
            libc::S_IFBLK => self.header(path, &Fields::of(st, EntryType::Block), &xattrs),
            libc::S_IFIFO => self.header(path, &Fields::of(st, EntryType::Fifo), &xattrs),
            // Sockets belong to a running program, not to an image (GNU tar skips them too).
            _ => Ok(()),
        }
    }

    /// Copy `size` bytes of `file` into the tar, then pad to a block.
    fn contents(&mut self, file: &File, size: u64) -> Result<(), String> {
        let mut left = size;
        let mut file = file;
        while left > 0 {
            let want = (self.data.len() as u64).min(left) as usize;
            let n = match file.read(&mut self.data[..want]) {
                Ok(0) => return Err(format!("file shrank while packed: {} of {size} bytes", size - left)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            self.tar.write_all(&self.data[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.tar.write_all(&[0u8; 512][..pad]).map_err(|e| e.to_string())
    }

    /// Write a ustar header for `path`, preceded by a PAX header when a field does not fit.
    fn header(&mut self, path: &[u8], f: &Fields<'_>, xattrs: &Xattrs) -> Result<(), String> {
        const MAX_ID: u64 = 0o7777777;
        const MAX_NUM: u64 = 0o77777777777;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if path.len() > 100 {
            pax.push((b"path".to_vec(), path.to_vec()));
        }
        if f.link.len() > 100 {
            pax.push((b"linkpath".to_vec(), f.link.to_vec()));
        }
        for (key, value) in [(&b"uid"[..], f.uid), (b"gid", f.gid), (b"size", f.size)] {
            let max = if key == b"size" { MAX_NUM } else { MAX_ID };
            if value > max {
                pax.push((key.to_vec(), value.to_string().into_bytes()));
            }
        }
        if f.mtime < 0 || f.mtime as u64 > MAX_NUM {
            pax.push((b"mtime".to_vec(), f.mtime.to_string().into_bytes()));
        }
        for (key, value) in xattrs {
            if key.contains(&b'=') {
                return Err(format!("xattr {} cannot be stored in a tar", String::from_utf8_lossy(key)));
            }
            pax.push(([&b"SCHILY.xattr."[..], key].concat(), value.clone()));
        }
        if !pax.is_empty() {
            // Xattrs last: readers that split records at newlines (the `tar` crate does), which
            // binary xattr values may hold, still find the other fields.
            pax.sort_by(|a, b| (a.0.starts_with(b"SCHILY."), a).cmp(&(b.0.starts_with(b"SCHILY."), b)));
            let mut records = Vec::new();
            for (key, value) in &pax {
                records.extend_from_slice(&pax_record(key, value));
            }
            let base = path.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).unwrap_or(b"");
            let name = [&b"PaxHeaders/"[..], base].concat();
            let x = Fields {
                kind: EntryType::XHeader,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                size: records.len() as u64,
                link: b"",
                rdev: 0,
            };
            self.ustar(&name, &x)?;
            self.tar.write_all(&records).map_err(|e| e.to_string())?;
            let pad = (512 - records.len() % 512) % 512;
            self.tar.write_all(&[0u8; 512][..pad]).map_err(|e| e.to_string())?;
        }
        self.ustar(path, f)
    }

    /// One ustar header block; fields that do not fit were put in a PAX header before it.
    fn ustar(&mut self, path: &[u8], f: &Fields<'_>) -> Result<(), String> {
        let mut h = Header::new_ustar();
        h.set_entry_type(f.kind);
        h.set_mode(f.mode);
        h.set_uid(if f.uid > 0o7777777 { 0 } else { f.uid });
        h.set_gid(if f.gid > 0o7777777 { 0 } else { f.gid });
        h.set_size(f.size);
        h.set_mtime(f.mtime.clamp(0, 0o77777777777) as u64);
        let raw = h.as_ustar_mut().expect("a ustar header");
        raw.name[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
        raw.linkname[..f.link.len().min(100)].copy_from_slice(&f.link[..f.link.len().min(100)]);
        if matches!(f.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(libc::major(f.rdev)).map_err(|e| e.to_string())?;
            h.set_device_minor(libc::minor(f.rdev)).map_err(|e| e.to_string())?;
        }
        h.set_cksum();
        self.tar.write_all(h.as_bytes()).map_err(|e| e.to_string())
    }
}

/// `"<len> <key>=<value>\n"`, where len counts the whole record, its own digits included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} ").into_bytes();
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", strerror(errno()))
}

fn lstat(dir: &Dir, name: &CStr) -> Result<libc::stat, String> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated and st is a valid out pointer.
    let rc = unsafe { libc::fstatat(dir.fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc < 0 {
        return Err(os_err("stat"));
    }
    Ok(st)
}

fn open_file(dir: &Dir, name: &CStr) -> Result<File, String> {
    // SAFETY: name is NUL-terminated; the fd returned is owned by us.
    let fd = unsafe {
        libc::openat(dir.fd.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    };
    if fd < 0 {
        return Err(os_err("open"));
    }
    // SAFETY: fd was just opened and is not owned elsewhere.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn readlink(dir: &Dir, name: &CStr, size: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; size.max(1) + 1];
    loop {
        // SAFETY: name is NUL-terminated and buf is a valid buffer of the length passed.
        let n = unsafe {
            libc::readlinkat(dir.fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 0 {
            return Err(os_err("readlink"));
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // The link changed under us and grew: try again with room to spare.
        buf.resize(buf.len() * 2, 0);
    }
}

/// The xattrs of `name` in `dir` (not following a symlink), sorted by key. `security.selinux`
/// is left out: labels belong to the host's policy, which sets them again on extraction.
fn xattrs(dir: &Dir, name: &CStr) -> Result<Xattrs, String> {
    // The entry through its directory's fd: no path length limit, no symlink followed at the
    // last component.
    let path =
        CString::new([format!("/proc/self/fd/{}/", dir.fd.as_raw_fd()).as_bytes(), name.to_bytes()].concat())
            .map_err(|_| "name contains a NUL byte".to_string())?;
    let mut list = vec![0u8; 256];
    let len = loop {
        // SAFETY: path is NUL-terminated and list a valid buffer of the length passed.
        let n = unsafe { libc::llistxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
        if n >= 0 {
            break n as usize;
        }
        match errno() {
            libc::ENOTSUP => return Ok(Vec::new()),
            // SAFETY: path is NUL-terminated; a null buffer asks for the size.
            libc::ERANGE => {
                let want = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
                if want < 0 {
                    return Err(os_err("listxattr"));
                }
                list.resize(want as usize + 1, 0);
            }
            _ => return Err(os_err("listxattr")),
        }
    };
    let mut out = Vec::new();
    'keys: for key in list[..len].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if key == b"security.selinux" {
            continue;
        }
        let ckey = CString::new(key).map_err(|_| "xattr name contains a NUL byte".to_string())?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: both strings are NUL-terminated and value a valid buffer of its length.
            let n = unsafe {
                libc::lgetxattr(path.as_ptr(), ckey.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if n >= 0 {
                value.truncate(n as usize);
                break;
            }
            match errno() {
                // SAFETY: as above; a null buffer asks for the size.
                libc::ERANGE => {
                    let want =
                        unsafe { libc::lgetxattr(path.as_ptr(), ckey.as_ptr(), std::ptr::null_mut(), 0) };
                    if want < 0 {
                        return Err(os_err("getxattr"));
                    }
                    value.resize(want as usize + 1, 0);
                }
                // Removed since it was listed.
                libc::ENODATA => continue 'keys,
                _ => return Err(format!("getxattr {}: {}", String::from_utf8_lossy(key), strerror(errno()))),
            }
        }
        out.push((key.to_vec(), value));
    }
    out.sort();
    Ok(out)
}
