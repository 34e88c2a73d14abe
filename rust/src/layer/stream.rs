//! The stages of extraction before file creation, each on a thread of its own: [`decode`]
//! reads the blob (copying it to a tee if asked), detects its compression and decodes it;
//! [`hash`] hashes the blob and the tar; the extracting thread reads the tar through
//! [`ChannelReader`]. Chunks pass along bounded channels and come back to the decoder once
//! read, so the same few buffers carry the whole layer (fresh memory is slow to touch on these
//! VMs). Three threads rather than two: on two cores, whichever core is idle takes the hashing,
//! whatever the compression, and inflating gzip (the longest stage) does nothing else.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

/// Bytes of tar per chunk sent to the extracting thread.
const CHUNK: usize = 1 << 18;
/// Chunks in flight between two threads (bounds memory to about 2 × DEPTH × CHUNK).
pub(super) const DEPTH: usize = 12;
/// Bytes read from the blob at a time.
const READ: usize = 1 << 17;

/// What goes down the pipeline.
pub(super) enum Chunk {
    /// Compressed bytes as read, for the blob's digest (the hasher keeps them).
    Blob(Vec<u8>),
    /// A buffer of `CHUNK` bytes of which the first `.1` hold tar.
    Data(Vec<u8>, usize),
    Failed(io::Error),
}

/// The digests [`hash`] computed: `sha256:<hex>` of the blob (None for a plain tar: the blob is
/// the tar) and of the tar.
pub(super) struct Digests {
    pub(super) blob: Option<String>,
    pub(super) tar: String,
}

/// Read `reader` to its end, copying every byte to `tee`, sending the decoded tar (and the
/// compressed bytes) to `tx` and taking used buffers back from `free`; return the bytes read.
/// A failure is also sent (so the extracting thread stops at the entry it was reading) and
/// returned.
pub(super) fn decode(
    reader: impl Read,
    tee: Option<&mut (dyn Write + Send)>,
    tx: SyncSender<Chunk>,
    free: Receiver<Vec<u8>>,
) -> io::Result<u64> {
    let result = decode_inner(reader, tee, &tx, &free);
    if let Err(e) = &result {
        let _ = tx.send(Chunk::Failed(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

fn decode_inner(
    reader: impl Read,
    tee: Option<&mut (dyn Write + Send)>,
    tx: &SyncSender<Chunk>,
    free: &Receiver<Vec<u8>>,
) -> io::Result<u64> {
    let source = Source { inner: reader, blob: Blob::Held(Vec::new()), tee, read: 0 };
    let mut compressed = BufReader::with_capacity(READ, source);
    let magic = {
        let buf = compressed.fill_buf()?;
        buf[..buf.len().min(4)].to_vec()
    };
    let compressed_blob = magic.starts_with(&[0x1f, 0x8b]) || magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let source = compressed.get_mut();
    if let Blob::Held(first) = std::mem::replace(&mut source.blob, Blob::Unhashed) {
        if compressed_blob {
            // What was read to find the magic, then everything read after it.
            tx.send(Chunk::Blob(first)).map_err(|_| io::Error::other("extraction stopped"))?;
            source.blob = Blob::Sent(tx.clone());
        }
    }
    let source = if magic.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::bufread::MultiGzDecoder::new(compressed);
        pump(&mut decoder, tx, free)?;
        drain(decoder.into_inner())?
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
        pump(&mut decoder, tx, free)?;
        drain(decoder.finish())?
    } else {
        // The blob is the tar: it is hashed once, as the tar.
        pump(&mut compressed, tx, free)?;
        compressed.into_inner()
    };
    Ok(source.read)
}

/// Send everything `decoded` yields down the pipeline.
fn pump(decoded: &mut impl Read, tx: &SyncSender<Chunk>, free: &Receiver<Vec<u8>>) -> io::Result<()> {
    loop {
        let mut buf = free.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let mut n = 0;
        while n < buf.len() {
            match decoded.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(());
        }
        if tx.send(Chunk::Data(buf, n)).is_err() {
            // The extracting thread stopped (it has its own error to report).
            return Err(io::Error::other("extraction stopped"));
        }
    }
}

/// Hash the blob, and the tar on its way from the decoder to the extracting thread; None if
/// that thread stopped first.
pub(super) fn hash(rx: Receiver<Chunk>, tx: SyncSender<Chunk>) -> Option<Digests> {
    let mut tar = Sha256::new();
    let mut blob: Option<Sha256> = None;
    for chunk in rx {
        match &chunk {
            Chunk::Blob(bytes) => {
                blob.get_or_insert_with(Sha256::new).update(bytes);
                continue;
            }
            Chunk::Data(buf, len) => tar.update(&buf[..*len]),
            Chunk::Failed(_) => {}
        }
        tx.send(chunk).ok()?;
    }
    Some(Digests { blob: blob.map(|hash| hex(&hash.finalize())), tar: hex(&tar.finalize()) })
}

/// Read what the decoder left unread (padding after the last frame), so the blob's digest and
/// the tee cover every byte.
fn drain<R: Read>(mut rest: BufReader<Source<'_, R>>) -> io::Result<Source<'_, R>> {
    io::copy(&mut rest, &mut io::sink())?;
    Ok(rest.into_inner())
}

pub(super) fn hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256:");
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// The blob as read: counted, sent to the hasher and copied to the tee on its way to the
/// decoder.
struct Source<'t, R> {
    inner: R,
    blob: Blob,
    tee: Option<&'t mut (dyn Write + Send)>,
    read: u64,
}

/// Where the compressed bytes go for the blob's digest.
enum Blob {
    /// Kept until the magic bytes tell whether the blob is compressed.
    Held(Vec<u8>),
    /// Sent to the hasher.
    Sent(SyncSender<Chunk>),
    /// Not hashed apart: a plain tar.
    Unhashed,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        match &mut self.blob {
            Blob::Held(first) => first.extend_from_slice(&buf[..n]),
            Blob::Sent(tx) => {
                tx.send(Chunk::Blob(buf[..n].to_vec())).map_err(|_| io::Error::other("extraction stopped"))?
            }
            Blob::Unhashed => {}
        }
        if let Some(tee) = self.tee.as_mut() {
            tee.write_all(&buf[..n]).map_err(|e| io::Error::new(e.kind(), format!("tee: {e}")))?;
        }
        Ok(n)
    }
}

/// The extracting thread's end: the tar as a `Read`. Buffers it is done with go back to the
/// decoder through `free`.
pub(super) struct ChannelReader {
    rx: Receiver<Chunk>,
    free: Sender<Vec<u8>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
}

impl ChannelReader {
    pub(super) fn new(rx: Receiver<Chunk>, free: Sender<Vec<u8>>) -> ChannelReader {
        ChannelReader { rx, free, cur: Vec::new(), len: 0, pos: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            match self.rx.recv() {
                Ok(Chunk::Data(chunk, len)) => {
                    let done = std::mem::replace(&mut self.cur, chunk);
                    if !done.is_empty() {
                        // The decoder may have finished: then the buffer is simply dropped.
                        let _ = self.free.send(done);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Chunk::Failed(e)) => return Err(e),
                // The hasher keeps these.
                Ok(Chunk::Blob(_)) => {}
                // The decoder finished (or failed, and said so first).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
