//! What each tar entry is, once the headers before it are applied: PAX records (read by their
//! lengths, so values may hold any byte), GNU long names and link names, old GNU sparse maps.
//!
//! The `tar` crate is used in raw mode: it finds the headers and the data, and this module
//! interprets them. (Its own PAX parser splits records at newlines, which binary xattr values
//! such as `security.capability` may hold.)

use std::ffi::CString;
use std::io::Read;

use tar::EntryType;

use super::{cstring, Meta};

/// Extension headers larger than this are refused (a PAX header is a few hundred bytes; xattrs
/// are at most 64 KiB each).
const MAX_EXTENSION: u64 = 8 << 20;

/// An entry with its extensions applied.
pub(super) struct Described {
    pub(super) kind: EntryType,
    pub(super) name: Vec<u8>,
    pub(super) link: Option<Vec<u8>>,
    pub(super) meta: Meta,
    /// For an old GNU sparse file: its data segments (offset, length) and its size.
    pub(super) sparse: Option<(Vec<(u64, u64)>, u64)>,
}

/// Headers read so far that describe the next entry.
#[derive(Default)]
pub(super) struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    /// Whether anything read describes an entry not yet seen.
    pub(super) fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }

    /// Keep `entry` if it only describes the next one (true), else leave it (false).
    pub(super) fn absorb<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<bool, String> {
        let slot = match entry.header().entry_type() {
            EntryType::XHeader => &mut self.pax,
            EntryType::GNULongName => &mut self.long_name,
            EntryType::GNULongLink => &mut self.long_link,
            // Global PAX headers set defaults no image tool relies on: skipped, as before.
            EntryType::XGlobalHeader => return Ok(true),
            _ => return Ok(false),
        };
        if slot.is_some() {
            return Err("two extension headers of one kind for one entry".into());
        }
        if entry.size() > MAX_EXTENSION {
            return Err(format!("extension header of {} bytes", entry.size()));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(|e| format!("read: {e}"))?;
        *slot = Some(data);
        Ok(true)
    }

    /// What `entry` is, with the pending extensions applied (and cleared).
    pub(super) fn describe<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Described, String> {
        let pending = std::mem::take(self);
        let h = entry.header();
        let kind = h.entry_type();
        let text = |what: &str, e: std::io::Error| format!("bad {what} field: {e}");
        let mut name = match pending.long_name {
            Some(long) => trim_nul(long),
            None => h.path_bytes().into_owned(),
        };
        let mut link = match pending.long_link {
            Some(long) => Some(trim_nul(long)),
            None => h.link_name_bytes().map(|l| l.into_owned()),
        };
        let mut meta = Meta {
            uid: h.uid().map_err(|e| text("uid", e))? as u32,
            gid: h.gid().map_err(|e| text("gid", e))? as u32,
            mode: h.mode().map_err(|e| text("mode", e))? & 0o7777,
            mtime: h.mtime().map_err(|e| text("mtime", e))? as i64,
            xattrs: Vec::new(),
        };
        let mut xattrs: Vec<(CString, Vec<u8>)> = Vec::new();
        if let Some(pax) = &pending.pax {
            for (key, value) in records(pax)? {
                if let Some(key) = key.strip_prefix(b"SCHILY.xattr.") {
                    // An xattr's value may be empty.
                    xattrs.retain(|(k, _)| k.as_bytes() != key);
                    xattrs.push((cstring(key)?, value.to_vec()));
                    continue;
                }
                match key {
                    // An empty value undoes the field: the header's stands.
                    _ if value.is_empty() => {}
                    b"path" => name = value.to_vec(),
                    b"linkpath" => link = Some(value.to_vec()),
                    b"uid" => meta.uid = number(value)? as u32,
                    b"gid" => meta.gid = number(value)? as u32,
                    b"mtime" => meta.mtime = number(value)?,
                    // The crate, in raw mode, reads as much data as the header says.
                    b"size" if number(value)? as u64 != entry.size() => {
                        return Err("a PAX size that differs from the header's".into())
                    }
                    _ => {}
                }
            }
        }
        meta.xattrs = xattrs;
        let sparse = if kind == EntryType::GNUSparse { Some(sparse_map(entry)?) } else { None };
        Ok(Described { kind, name, link, meta, sparse })
    }
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// A PAX record's key and value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// The records of a PAX header: `"<len> <key>=<value>\n"`, len counting the whole record.
fn records(data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let bad = || "bad PAX record".to_string();
    let mut out = Vec::new();
    let mut rest = data;
    // Some writers pad the header's data with NULs.
    while rest.first().is_some_and(|&b| b != 0) {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize =
            std::str::from_utf8(&rest[..space]).ok().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        if len <= space + 2 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((&record[..eq], &record[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// A PAX number: decimal, maybe signed, maybe with a fraction (dropped).
fn number(value: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(value).map_err(|_| "bad PAX number".to_string())?;
    let int = text.split('.').next().unwrap_or("");
    int.parse::<i64>().map_err(|_| format!("bad PAX number {text:?}"))
}

/// The data segments of an old GNU sparse entry, checked against its data and its size.
fn sparse_map<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(Vec<(u64, u64)>, u64), String> {
    let gnu = entry.header().as_gnu().ok_or("a sparse entry without a GNU header")?;
    if gnu.is_extended() {
        // The crate in raw mode would take the extension blocks for data.
        return Err("GNU sparse file with more than 4 segments".into());
    }
    let size = gnu.real_size().map_err(|e| format!("bad sparse size: {e}"))?;
    let mut map = Vec::new();
    let (mut end, mut stored) = (0u64, 0u64);
    for block in gnu.sparse.iter().filter(|b| !b.is_empty()) {
        let offset = block.offset().map_err(|e| format!("bad sparse map: {e}"))?;
        let length = block.length().map_err(|e| format!("bad sparse map: {e}"))?;
        if offset < end {
            return Err("sparse segments out of order".into());
        }
        end = offset.checked_add(length).ok_or("sparse segment past the end")?;
        stored += length;
        map.push((offset, length));
    }
    if end > size || stored != entry.size() {
        return Err("sparse map does not match the entry's sizes".into());
    }
    Ok((map, size))
}
