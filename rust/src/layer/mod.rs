//! Streaming, confined extraction of an image layer (a tar, plain, gzip or zstd).
//!
//! [`extract`] reads the blob once: the compressed bytes are hashed (the blob digest), decoded,
//! hashed again (the diff ID) and parsed by the `tar` crate, whose headers, PAX records and GNU
//! long names we trust only as data. Every file is created by *at() system calls relative to a
//! directory fd obtained with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) on the target
//! directory, so no name and no symlink in the layer can reach outside the target. OCI whiteouts
//! become overlayfs's own form (a 0:0 character device, `trusted.overlay.opaque=y`).
//!
//! Decompression and both hashes run on a scoped second thread (`stream`), which hands the tar
//! over in chunks through a bounded channel; this thread parses entries and creates files.

mod fsops;
mod stream;

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

use tar::EntryType;

use crate::error::Error;
use fsops::{Dir, Resolve};

/// What [`extract`] read: the digests of the blob and of its tar, and how many entries it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
    /// `sha256:<hex>` of the bytes read (equal to `diff_id` for an uncompressed layer).
    pub compressed_digest: String,
    /// Number of tar entries applied (PAX and GNU long-name headers not counted).
    pub entries: u64,
}

/// Extract the layer read from `reader` into the existing directory `target_dir`.
///
/// Compression is detected by magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar).
/// The whole stream is read, so the returned digests cover every byte. Errors name the layer
/// (`layer_name`) and the entry; a hostile entry fails before anything is written outside
/// `target_dir`. What was extracted before the error stays: the caller extracts into a scratch
/// directory and removes it on failure. `reader` is read on a second thread (hence `Send`);
/// the call blocks until the whole layer is extracted.
pub fn extract(reader: impl Read + Send, target_dir: &Path, layer_name: &str) -> Result<Extracted, Error> {
    let fail = |entry: &str, reason: String| Error::Layer {
        layer: layer_name.to_string(),
        entry: entry.to_string(),
        reason,
    };
    let root =
        Dir::open_root(target_dir).map_err(|e| fail(&target_dir.display().to_string(), e.to_string()))?;

    // Decoding and hashing run on a second thread, file creation on this one.
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(stream::DEPTH);
        let decoder = scope.spawn(move || stream::decode(reader, tx));
        // Returning drops the receiver, which stops the decoder if we stopped first.
        let applied = apply_all(stream::ChannelReader::new(rx), root, &fail);
        let decoded = decoder.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let entries = applied?;
        let digests = decoded.map_err(|e| fail("<stream>", e.to_string()))?;
        Ok(Extracted { diff_id: digests.tar, compressed_digest: digests.blob, entries })
    })
}

/// Apply every entry of the tar read from `tar`, then read it to its end.
fn apply_all(
    tar: stream::ChannelReader,
    root: Dir,
    fail: &dyn Fn(&str, String) -> Error,
) -> Result<u64, Error> {
    let mut archive = tar::Archive::new(tar);
    let mut state = Extractor { root, dirs_to_time: Vec::new(), parent_cache: None };
    let mut entries = 0u64;
    let iter = archive.entries().map_err(|e| fail("<stream>", e.to_string()))?;
    for entry in iter {
        let mut entry = entry.map_err(|e| fail("<stream>", format!("bad tar header: {e}")))?;
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        state.apply(&mut entry, &raw_name).map_err(|reason| fail(&name, reason))?;
        entries += 1;
    }
    state.finish().map_err(|(entry, reason)| fail(&entry, reason))?;
    // Read the end-of-archive blocks and anything after them, so both digests cover the blob.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| fail("<stream>", e.to_string()))?;
    Ok(entries)
}

/// Split a tar name into components inside the root: leading `/` and `.` are dropped, `..`
/// pops, and a `..` that would climb above the root is an error.
fn normalise(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
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
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let h = entry.header();
    let mut meta = Meta {
        uid: h.uid().map_err(|e| e.to_string())? as u32,
        gid: h.gid().map_err(|e| e.to_string())? as u32,
        mode: h.mode().map_err(|e| e.to_string())? & 0o7777,
        mtime: h.mtime().map_err(|e| e.to_string())? as i64,
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions().map_err(|e| e.to_string())? {
        for ext in exts {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = || -> Result<u64, String> {
                let text = std::str::from_utf8(value).map_err(|_| "bad PAX number".to_string())?;
                let int = text.split('.').next().unwrap_or("");
                int.parse::<u64>().map_err(|_| format!("bad PAX number {text:?}"))
            };
            match key {
                b"uid" => meta.uid = num()? as u32,
                b"gid" => meta.gid = num()? as u32,
                b"mtime" => meta.mtime = num()? as i64,
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        meta.xattrs.push((cstring(name)?, value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

struct Extractor {
    root: Dir,
    /// Directories whose mtime is set at the end (their contents change them until then).
    dirs_to_time: Vec<(Vec<u8>, i64)>,
    /// The parent directory of the last entry, reused while entries stay in one directory.
    parent_cache: Option<(Vec<u8>, Dir)>,
}

impl Extractor {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw_name: &[u8]) -> Result<(), String> {
        let kind = entry.header().entry_type();
        let parts = normalise(raw_name)?;
        let Some((base, parent_parts)) = parts.split_last() else {
            // The root itself ("./"): only a directory can describe it.
            if kind != EntryType::Directory {
                return Err("only a directory may name the layer root".into());
            }
            let meta = meta_of(entry)?;
            let root = self.root.open_dir(b"", Resolve::InRoot)?;
            root.set_meta_fd(&meta)?;
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
        let meta = meta_of(entry)?;
        match kind {
            EntryType::Directory => {
                if !parent.mkdir(&base_c)? {
                    parent.remove_existing(&base_c, true)?;
                    parent.mkdir(&base_c)?;
                }
                let dir = parent.open_child_dir(&base_c)?;
                dir.set_meta_fd(&meta)?;
                self.dirs_to_time.push((path, meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Create first: only a name already taken costs a stat and an unlink.
                let file = match parent.create_file(&base_c)? {
                    Some(file) => file,
                    None => {
                        parent.remove_existing(&base_c, false)?;
                        parent.create_file(&base_c)?.ok_or("create: File exists")?
                    }
                };
                let expected = entry.size();
                let sparse = kind == EntryType::GNUSparse;
                let written = fsops::write_all(&file, entry, sparse, expected)?;
                if written != expected {
                    return Err(format!("truncated: {written} of {expected} bytes"));
                }
                fsops::set_meta_fd(file.as_raw_fd(), &meta)?;
                fsops::set_mtime_fd(file.as_raw_fd(), meta.mtime)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or("symlink without a target")?;
                let target = cstring(&target)?;
                parent.remove_existing(&base_c, false)?;
                parent.symlink(&target, &base_c)?;
                parent.chown(&base_c, meta.uid, meta.gid)?;
                parent.set_mtime_nofollow(&base_c, meta.mtime)?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or("hard link without a target")?;
                let tparts = normalise(&target).map_err(|e| format!("hard link target: {e}"))?;
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
                            dir.mkdir(&c)?;
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
    fn set_meta_fd(&self, meta: &Meta) -> Result<(), String> {
        fsops::set_meta_fd(self.fd.as_raw_fd(), meta)
    }
}

#[cfg(test)]
mod tests;
