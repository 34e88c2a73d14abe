//! Streaming, confined extraction of an image layer (a tar, plain, gzip or zstd).
//!
//! [`extract`] reads the blob once: the compressed bytes are hashed (the blob digest), decoded,
//! hashed again (the diff ID) and split into headers and data by the `tar` crate in raw mode;
//! `headers` applies PAX records, GNU long names and sparse maps, all trusted only as data.
//! Absolute names, names that climb out with `..` and a regular file over a symlink are
//! refused as hostile. Every file is created by *at() system calls relative to a
//! directory fd obtained with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) on the target
//! directory, so no name and no symlink in the layer can reach outside the target. OCI whiteouts
//! become overlayfs's own form (a 0:0 character device, `trusted.overlay.opaque=y`).
//!
//! Reading and decompression run on a scoped thread, both hashes on another (`stream`), which
//! hand the tar over in chunks through bounded channels; the calling thread parses entries and
//! creates files. [`pack`] is the way back: a directory tree (an overlayfs upper directory,
//! whiteouts included) to a layer.

mod fsops;
mod headers;
mod pack;
mod stream;

pub use pack::{pack, Compression, Packed};

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

use tar::EntryType;

use crate::error::Error;
use fsops::{Created, Dir, Resolve};

/// What [`extract`] read: the digests of the blob and of its tar, and how many entries it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
    /// `sha256:<hex>` of the bytes read (equal to `diff_id` for an uncompressed layer).
    pub compressed_digest: String,
    /// Bytes read from `reader` (the blob's size).
    pub compressed_size: u64,
    /// Number of tar entries applied (PAX and GNU long-name headers not counted).
    pub entries: u64,
    /// Apparent bytes of the files and symlinks made (hard links not counted again): the
    /// layer's size as `docker images` adds it up, without walking the tree afterwards.
    pub size: u64,
}

/// Extract the layer read from `reader` into the existing directory `target_dir`.
///
/// Compression is detected by magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar).
/// The whole stream is read, so the returned digests cover every byte. Errors name the layer
/// (`layer_name`) and the entry; a hostile entry fails before anything is written outside
/// `target_dir`. What was extracted before the error stays: the caller extracts into a scratch
/// directory and removes it on failure. `reader` is read on another thread (hence `Send`),
/// which also writes every byte it reads to `tee`, if given (to keep the blob while extracting
/// it); the call blocks until the whole layer is extracted.
pub fn extract(
    reader: impl Read + Send,
    tee: Option<&mut (dyn Write + Send)>,
    target_dir: &Path,
    layer_name: &str,
) -> Result<Extracted, Error> {
    let fail = |entry: &str, reason: String| Error::Layer {
        layer: layer_name.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let root =
        Dir::open_root(target_dir).map_err(|e| fail(&target_dir.display().to_string(), e.to_string()))?;

    // Decoding and hashing run on two more threads, file creation on this one.
    std::thread::scope(|scope| {
        let (decoded_tx, decoded_rx) = mpsc::sync_channel(stream::DEPTH);
        let (hashed_tx, hashed_rx) = mpsc::sync_channel(stream::DEPTH);
        let (free_tx, free_rx) = mpsc::channel();
        let decoder = scope.spawn(move || stream::decode(reader, tee, decoded_tx, free_rx));
        let hasher = scope.spawn(move || stream::hash(decoded_rx, hashed_tx));
        // Returning drops the receiver, which stops the others if we stopped first.
        let applied = apply_all(stream::ChannelReader::new(hashed_rx, free_tx), root, &fail);
        let hashed = hasher.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let decoded = decoder.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (entries, size) = applied?;
        let read = decoded.map_err(|e| fail("<stream>", e.to_string()))?;
        // The hasher saw the whole stream: the extracting thread read it to its end.
        let digests = hashed.ok_or_else(|| fail("<stream>", "extraction stopped".into()))?;
        Ok(Extracted {
            compressed_digest: digests.blob.unwrap_or_else(|| digests.tar.clone()),
            diff_id: digests.tar,
            compressed_size: read,
            entries,
            size,
        })
    })
}

/// Apply every entry of the tar read from `tar`, then read it to its end; return the number of
/// entries and the bytes of the files and symlinks made.
fn apply_all(
    tar: stream::ChannelReader,
    root: Dir,
    fail: &dyn Fn(&str, String) -> Error,
) -> Result<(u64, u64), Error> {
    let mut archive = tar::Archive::new(tar);
    // A default ACL makes creation modes ignore the umask: then every mode is set explicitly.
    let umask = if root.has_default_acl() { None } else { process_umask() };
    let mut state = Extractor {
        root,
        dirs_to_time: Vec::new(),
        parent_cache: None,
        // SAFETY: geteuid and getegid cannot fail.
        ids: unsafe { (libc::geteuid(), libc::getegid()) },
        umask,
        data: vec![0u8; 1 << 17],
        size: 0,
    };
    let mut entries = 0u64;
    let mut pending = headers::Pending::default();
    let iter = archive.entries().map_err(|e| fail("<stream>", e.to_string()))?.raw(true);
    for entry in iter {
        let mut entry = entry.map_err(|e| fail("<stream>", format!("bad tar header: {e}")))?;
        let lossy = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
        let header_name = lossy(&entry.header().path_bytes());
        if pending.absorb(&mut entry).map_err(|reason| fail(&header_name, reason))? {
            continue;
        }
        let described = pending.describe(&entry).map_err(|reason| fail(&header_name, reason))?;
        state.apply(&mut entry, &described).map_err(|reason| fail(&lossy(&described.name), reason))?;
        entries += 1;
    }
    if !pending.is_empty() {
        return Err(fail("<stream>", "extension headers without the entry they describe".into()));
    }
    state.finish().map_err(|(entry, reason)| fail(&entry, reason))?;
    // Read the end-of-archive blocks and anything after them, so both digests cover the blob.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| fail("<stream>", e.to_string()))?;
    Ok((entries, state.size))
}

/// The process's umask, read without changing it (umask(2) would race with other threads).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Split a tar name into components inside the root: `.` is dropped, `..` pops; an absolute
/// name, or a `..` that would climb above the root, is an error (the layer is hostile, or made
/// by a tool that no image builder is).
fn normalise(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if name.starts_with(b"/") {
        return Err("absolute name".into());
    }
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("path climbs above the layer root".into());
                }
            }
            _ => parts.push(comp.to_vec()),
        }
    }
    Ok(parts)
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&b'/')
}

fn cstring(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| "name contains a NUL byte".to_string())
}

/// Ownership, mode, mtime and xattrs of an entry, with PAX overrides applied.
pub(super) struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Extractor {
    root: Dir,
    /// Directories whose mtime is set at the end (their contents change them until then).
    dirs_to_time: Vec<(Vec<u8>, i64)>,
    /// The parent directory of the last entry, reused while entries stay in one directory.
    parent_cache: Option<(Vec<u8>, Dir)>,
    /// Our effective uid and gid: what a new inode is owned by, outside setgid directories.
    ids: (u32, u32),
    /// The umask creation modes pass through; None if unknown or not applied (default ACLs).
    umask: Option<u32>,
    /// The buffer file contents are copied through.
    data: Vec<u8>,
    /// Apparent bytes of the files and symlinks made so far.
    size: u64,
}

impl Extractor {
    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        what: &headers::Described,
    ) -> Result<(), String> {
        let kind = what.kind;
        let meta = &what.meta;
        let parts = normalise(&what.name)?;
        let Some((base, parent_parts)) = parts.split_last() else {
            // The root itself ("./"): only a directory can describe it.
            if kind != EntryType::Directory {
                return Err("only a directory may name the layer root".into());
            }
            let root = self.root.open_dir(b"", Resolve::InRoot)?;
            root.set_meta_fd(meta, Created::default())?;
            self.dirs_to_time.push((Vec::new(), meta.mtime));
            return Ok(());
        };
        let parent_path = join(parent_parts);
        let path = join(&parts);

        // An entry that replaces a directory may invalidate the cached parent below it.
        if let Some((cached, _)) = &self.parent_cache {
            if cached == &path || cached.starts_with(&[path.as_slice(), b"/"].concat()) {
                self.parent_cache = None;
            }
        }

        // OCI whiteouts: resolved without following any symlink, so they act only inside.
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            // A whiteout may remove a directory the cache holds open.
            self.parent_cache = None;
            drop(self.parent(&parent_path)?);
            let parent = self.root.open_dir(&parent_path, Resolve::NoSymlinks)?;
            if hidden == b".wh..opq" {
                parent.set_xattr_fd(c"trusted.overlay.opaque", b"y")?;
            } else {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err("bad whiteout name".into());
                }
                let name = cstring(hidden)?;
                parent.remove_existing(&name, false)?;
                parent.mknod(&name, libc::S_IFCHR, 0)?;
                parent.chown(&name, 0, 0)?;
            }
            return Ok(());
        }

        let base_c = cstring(base)?;
        let parent = self.parent(&parent_path)?;
        if meta.xattrs.iter().any(|(k, _)| k.as_bytes() == b"system.posix_acl_default") {
            self.umask = None;
        }
        let created = self.created(&parent, meta)?;
        match kind {
            EntryType::Directory => {
                let mode = if created.mode { meta.mode } else { 0o755 };
                let fresh = parent.mkdir(&base_c, mode)? || {
                    parent.remove_existing(&base_c, true)?;
                    parent.mkdir(&base_c, mode)?
                };
                let dir = parent.open_child_dir(&base_c)?;
                dir.set_meta_fd(meta, if fresh { created } else { Created::default() })?;
                self.dirs_to_time.push((path.clone(), meta.mtime));
                // What follows a directory is most often inside it.
                self.parent_cache = Some((path, dir));
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Create first: only a name already taken costs a stat and an unlink.
                let mode = if created.mode { meta.mode } else { 0o600 };
                let file = match parent.create_file(&base_c, mode)? {
                    Some(file) => file,
                    None => {
                        // The classic escape: a link out, then a file "over" it that a naive
                        // extractor writes through. We would not, but the layer is hostile.
                        if parent.is_symlink(&base_c)? {
                            return Err("regular file over a symlink".into());
                        }
                        parent.remove_existing(&base_c, false)?;
                        parent.create_file(&base_c, mode)?.ok_or("create: File exists")?
                    }
                };
                match &what.sparse {
                    None => {
                        let size = entry.size();
                        fsops::write_all(&file, entry, &mut self.data, size)?;
                        self.size += size;
                    }
                    Some((map, size)) => {
                        fsops::write_sparse(&file, entry, &mut self.data, map, *size)?;
                        self.size += *size;
                    }
                }
                fsops::set_meta_fd(file.as_raw_fd(), meta, created)?;
                fsops::set_mtime_fd(file.as_raw_fd(), meta.mtime)?;
            }
            EntryType::Symlink => {
                let target = what.link.as_deref().ok_or("symlink without a target")?;
                let target = cstring(target)?;
                parent.remove_existing(&base_c, false)?;
                parent.symlink(&target, &base_c)?;
                self.size += target.as_bytes().len() as u64;
                if !created.owner {
                    parent.chown(&base_c, meta.uid, meta.gid)?;
                }
                parent.set_mtime_nofollow(&base_c, meta.mtime)?;
            }
            EntryType::Link => {
                let target = what.link.as_deref().ok_or("hard link without a target")?;
                let tparts = normalise(target).map_err(|e| format!("hard link target: {e}"))?;
                let Some((tbase, tparent)) = tparts.split_last() else {
                    return Err("hard link to the layer root".into());
                };
                let tdir = self.root.open_dir(&join(tparent), Resolve::InRoot)?;
                let tbase = cstring(tbase)?;
                parent.remove_existing(&base_c, false)?;
                fsops::link(&tdir, &tbase, &parent, &base_c)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (fmt, dev) = match kind {
                    EntryType::Char => (libc::S_IFCHR, device(entry.header())?),
                    EntryType::Block => (libc::S_IFBLK, device(entry.header())?),
                    // A fifo's device fields are often left empty: never read them.
                    _ => (libc::S_IFIFO, 0),
                };
                parent.remove_existing(&base_c, false)?;
                parent.mknod(&base_c, fmt, dev)?;
                parent.chown(&base_c, meta.uid, meta.gid)?;
                parent.chmod_special(&base_c, meta.mode)?;
                parent.set_mtime_nofollow(&base_c, meta.mtime)?;
            }
            // Global PAX headers and the like carry nothing to create.
            EntryType::XGlobalHeader => return Ok(()),
            other => return Err(format!("unsupported entry type {:?}", other.as_byte() as char)),
        }
        self.parent_cache = Some((parent_path, parent));
        Ok(())
    }

    /// What creating an entry of `meta` in `parent` with `meta.mode` as the creation mode gives
    /// it already: its owner and group when they are ours (and the directory not setgid), its
    /// mode when the umask takes nothing from it and it has no setuid, setgid or sticky bit.
    fn created(&self, parent: &Dir, meta: &Meta) -> Result<Created, String> {
        let plain = !parent.is_setgid()?;
        Ok(Created {
            owner: plain && (meta.uid, meta.gid) == self.ids,
            mode: plain && meta.mode & 0o7000 == 0 && self.umask.is_some_and(|m| meta.mode & m == 0),
        })
    }

    /// The directory that holds an entry, created (0755, root-owned) where it is missing.
    fn parent(&mut self, parent_path: &[u8]) -> Result<Dir, String> {
        if let Some((cached, dir)) = self.parent_cache.take() {
            if cached == parent_path {
                return Ok(dir);
            }
        }
        match self.root.open_dir(parent_path, Resolve::InRoot) {
            Ok(dir) => Ok(dir),
            Err(_) => {
                // Walk down from the root, each prefix resolved in the root, creating what is
                // missing in the directory above it.
                let mut dir = self.root.open_dir(b"", Resolve::InRoot)?;
                let mut end = 0;
                for comp in parent_path.split(|&b| b == b'/') {
                    end += comp.len();
                    dir = match self.root.open_dir(&parent_path[..end], Resolve::InRoot) {
                        Ok(next) => next,
                        Err(_) => {
                            let c = cstring(comp)?;
                            dir.mkdir(&c, 0o755)?;
                            dir.open_child_dir(&c)?
                        }
                    };
                    end += 1;
                }
                Ok(dir)
            }
        }
    }

    /// Set the mtimes of directories, deepest last-seen first.
    fn finish(&mut self) -> Result<(), (String, String)> {
        self.parent_cache = None;
        for (path, mtime) in self.dirs_to_time.iter().rev() {
            let name = String::from_utf8_lossy(path).into_owned();
            let dir = self.root.open_dir(path, Resolve::InRoot).map_err(|e| (name.clone(), e))?;
            fsops::set_mtime_fd(dir.fd.as_raw_fd(), *mtime).map_err(|e| (name, e))?;
        }
        Ok(())
    }
}

fn device(h: &tar::Header) -> Result<libc::dev_t, String> {
    let major = h.device_major().map_err(|e| e.to_string())?.unwrap_or(0);
    let minor = h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

impl Dir {
    fn set_meta_fd(&self, meta: &Meta, created: Created) -> Result<(), String> {
        fsops::set_meta_fd(self.fd.as_raw_fd(), meta, created)
    }
}

#[cfg(test)]
mod tests;
