//! The decoding side of extraction: hash the blob, detect its compression, decode it, hash the
//! tar, and hand the tar to the extracting thread in chunks over a bounded channel.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

/// Bytes of tar per chunk sent to the extracting thread.
const CHUNK: usize = 1 << 18;
/// Chunks in flight between the threads (bounds memory to DEPTH × CHUNK).
pub(super) const DEPTH: usize = 8;

pub(super) type Chunk = io::Result<Vec<u8>>;

/// `sha256:<hex>` of the blob as read, and of the tar it decodes to.
pub(super) struct Digests {
    pub(super) blob: String,
    pub(super) tar: String,
}

/// Read `reader` to its end, sending the decoded tar to `tx`. A failure is also sent (so the
/// extracting thread stops at the entry it was reading) and returned.
pub(super) fn decode(reader: impl Read, tx: SyncSender<Chunk>) -> io::Result<Digests> {
    let result = decode_inner(reader, &tx);
    if let Err(e) = &result {
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

fn decode_inner(reader: impl Read, tx: &SyncSender<Chunk>) -> io::Result<Digests> {
    let blob = Rc::new(RefCell::new(Some(Sha256::new())));
    let mut compressed = BufReader::with_capacity(1 << 17, Hashing { inner: reader, hash: Rc::clone(&blob) });
    let magic = {
        let buf = compressed.fill_buf()?;
        buf[..buf.len().min(4)].to_vec()
    };
    let plain = !magic.starts_with(&[0x1f, 0x8b]) && !magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if plain {
        // The blob is the tar: hash it once, below.
        *blob.borrow_mut() = None;
    }
    let mut decoded: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(compressed))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(compressed)?)
    } else {
        Box::new(compressed)
    };
    let mut tar = Sha256::new();
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match decoded.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        tar.update(&buf);
        if tx.send(Ok(buf)).is_err() {
            // The extracting thread stopped (it has its own error to report).
            return Err(io::Error::other("extraction stopped"));
        }
    }
    drop(decoded);
    let tar = hex(&tar.finalize());
    let blob = match blob.borrow_mut().take() {
        Some(hash) => hex(&hash.finalize()),
        None => tar.clone(),
    };
    Ok(Digests { blob, tar })
}

fn hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A reader that feeds everything it reads into a SHA-256.
struct Hashing<R> {
    inner: R,
    hash: Rc<RefCell<Option<Sha256>>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hash) = self.hash.borrow_mut().as_mut() {
            hash.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The extracting thread's end: the tar as a `Read`.
pub(super) struct ChannelReader {
    rx: Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub(super) fn new(rx: Receiver<Chunk>) -> ChannelReader {
        ChannelReader { rx, cur: Vec::new(), pos: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder finished (or failed, and said so first).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
