//! Extraction tests on the real kernel (run as root: chown, mknod and trusted.* xattrs).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use super::extract;

/// A scratch directory holding `target/` (extracted into) and `sentinel/keep` (must survive).
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "kobako-layer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("target")).unwrap();
        fs::create_dir_all(base.join("sentinel")).unwrap();
        fs::write(base.join("sentinel/keep"), b"precious").unwrap();
        Scratch { base }
    }

    fn target(&self) -> PathBuf {
        self.base.join("target")
    }

    fn sentinel(&self) -> PathBuf {
        self.base.join("sentinel")
    }

    /// Nothing was written beside the target or into the sentinel.
    fn assert_sentinel_untouched(&self) {
        let mut top: Vec<_> = fs::read_dir(&self.base).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, ["sentinel", "target"]);
        let inside: Vec<_> = fs::read_dir(self.sentinel()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(inside, ["keep"]);
        let keep = self.sentinel().join("keep");
        let md = fs::symlink_metadata(&keep).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!(fs::read(&keep).unwrap(), b"precious");
        assert_eq!(md.nlink(), 1);
        assert_eq!(xattr(&self.sentinel(), "trusted.overlay.opaque"), None);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn sha(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A header with a literal name and link name (no validation, so hostile names pass).
fn raw(b: &mut Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(1_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

fn rich_tar() -> Vec<u8> {
    let long_dir = "long/".to_string() + &"d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    tar_of(|b| {
        b.append_data(&mut header(EntryType::Directory, 0o755, 0, 0, 1000), "./", &[][..]).unwrap();
        b.append_data(&mut header(EntryType::Directory, 0o1777, 1000, 1000, 2000), "d", &[][..]).unwrap();
        let data = b"hello world\n";
        let mut h = header(EntryType::Regular, 0o4755, 1000, 1001, 3000);
        h.set_size(data.len() as u64);
        b.append_pax_extensions([("SCHILY.xattr.trusted.kobako", &b"v1"[..])]).unwrap();
        b.append_data(&mut h, "d/suid", &data[..]).unwrap();
        let mut h = header(EntryType::Regular, 0o2750, 0, 42, 3000);
        h.set_size(3);
        b.append_data(&mut h, "d/sgid", &b"abc"[..]).unwrap();
        let mut h = header(EntryType::Symlink, 0o777, 1000, 1000, 4000);
        b.append_link(&mut h, "d/link", "suid").unwrap();
        let mut h = header(EntryType::Link, 0o644, 0, 0, 0);
        b.append_link(&mut h, "d/hard", "d/suid").unwrap();
        let mut h = header(EntryType::Char, 0o620, 0, 5, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "d/null", &[][..]).unwrap();
        b.append_data(&mut header(EntryType::Fifo, 0o600, 0, 0, 0), "d/fifo", &[][..]).unwrap();
        b.append_data(&mut header(EntryType::Directory, 0o700, 0, 0, 5000), &long_dir, &[][..]).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 0);
        h.set_size(4);
        b.append_data(&mut h, &long_file, &b"long"[..]).unwrap();
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 0);
        b.append_link(&mut h, "long/lnk", &long_file).unwrap();
    })
}

#[test]
fn round_trip_plain() {
    let s = Scratch::new();
    let tar = rich_tar();
    let out = extract(&tar[..], &s.target(), "L").unwrap();
    assert_eq!(out.diff_id, sha(&tar));
    assert_eq!(out.compressed_digest, sha(&tar));
    assert_eq!(out.entries, 11);
    let t = s.target();

    let root = fs::metadata(&t).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o755);
    assert_eq!(root.mtime(), 1000);
    let d = fs::metadata(t.join("d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()), (0o1777, 1000, 1000, 2000));

    let f = fs::symlink_metadata(t.join("d/suid")).unwrap();
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid(), f.mtime()), (0o4755, 1000, 1001, 3000));
    assert_eq!(fs::read(t.join("d/suid")).unwrap(), b"hello world\n");
    assert_eq!(xattr(&t.join("d/suid"), "trusted.kobako").as_deref(), Some(&b"v1"[..]));
    assert_eq!(f.nlink(), 2);
    let h = fs::symlink_metadata(t.join("d/hard")).unwrap();
    assert_eq!(h.ino(), f.ino());

    let g = fs::metadata(t.join("d/sgid")).unwrap();
    assert_eq!((g.mode() & 0o7777, g.gid()), (0o2750, 42));

    let l = fs::symlink_metadata(t.join("d/link")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!((l.uid(), l.mtime()), (1000, 4000));
    assert_eq!(fs::read_link(t.join("d/link")).unwrap(), Path::new("suid"));

    let n = fs::symlink_metadata(t.join("d/null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!((n.rdev(), n.mode() & 0o7777, n.gid()), (libc::makedev(1, 3), 0o620, 5));
    assert!(fs::symlink_metadata(t.join("d/fifo")).unwrap().file_type().is_fifo());

    let long_dir = "long/".to_string() + &"d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    assert_eq!(fs::read(t.join(&long_file)).unwrap(), b"long");
    assert_eq!(fs::metadata(t.join(&long_dir)).unwrap().mtime(), 5000);
    assert_eq!(fs::read_link(t.join("long/lnk")).unwrap(), Path::new(&long_file));
    s.assert_sentinel_untouched();
}

#[test]
fn gzip_and_zstd_are_detected() {
    let tar = rich_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for blob in [gz, zst] {
        let s = Scratch::new();
        let out = extract(&blob[..], &s.target(), "L").unwrap();
        assert_eq!(out.diff_id, sha(&tar));
        assert_eq!(out.compressed_digest, sha(&blob));
        assert_eq!(fs::read(s.target().join("d/suid")).unwrap(), b"hello world\n");
    }
}

#[test]
fn whiteouts_become_overlay_form() {
    let s = Scratch::new();
    let tar = tar_of(|b| {
        raw(b, "a/", EntryType::Directory, "", b"");
        raw(b, "a/.wh.gone", EntryType::Regular, "", b"");
        raw(b, "c/", EntryType::Directory, "", b"");
        raw(b, "c/.wh..wh..opq", EntryType::Regular, "", b"");
        raw(b, "c/kept", EntryType::Regular, "", b"x");
    });
    extract(&tar[..], &s.target(), "L").unwrap();
    let w = fs::symlink_metadata(s.target().join("a/gone")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!((w.rdev(), w.uid(), w.gid()), (0, 0, 0));
    assert!(!s.target().join("a/.wh.gone").exists());
    assert_eq!(xattr(&s.target().join("c"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!s.target().join("c/.wh..wh..opq").exists());
    assert!(s.target().join("c/kept").exists());
}

#[test]
fn absolute_names_stay_inside() {
    let s = Scratch::new();
    let tar = tar_of(|b| raw(b, "/etc/passwd", EntryType::Regular, "", b"root"));
    extract(&tar[..], &s.target(), "L").unwrap();
    assert_eq!(fs::read(s.target().join("etc/passwd")).unwrap(), b"root");
    s.assert_sentinel_untouched();
}

#[test]
fn regular_file_replaces_symlink_itself() {
    let s = Scratch::new();
    let keep = s.sentinel().join("keep");
    let keep = keep.to_str().unwrap();
    let tar = tar_of(|b| {
        raw(b, "s", EntryType::Symlink, keep, b"");
        raw(b, "s", EntryType::Regular, "", b"evil");
    });
    extract(&tar[..], &s.target(), "L").unwrap();
    assert!(fs::symlink_metadata(s.target().join("s")).unwrap().file_type().is_file());
    assert_eq!(fs::read(s.target().join("s")).unwrap(), b"evil");
    s.assert_sentinel_untouched();
}

/// Each hostile layer fails, names the layer and the entry, and writes nothing outside.
fn assert_hostile(entry: &str, build: impl FnOnce(&mut Builder<Vec<u8>>, &str)) {
    let s = Scratch::new();
    let sentinel = s.sentinel();
    let sentinel = sentinel.to_str().unwrap().to_string();
    let tar = tar_of(|b| build(b, &sentinel));
    let err = extract(&tar[..], &s.target(), "sha256:bad").unwrap_err().to_string();
    assert!(err.starts_with("layer sha256:bad: "), "{err}");
    assert!(err.contains(entry), "{err} does not name {entry}");
    s.assert_sentinel_untouched();
}

#[test]
fn dotdot_climbing_out_fails() {
    assert_hostile("../sentinel/evil", |b, _| raw(b, "../sentinel/evil", EntryType::Regular, "", b"x"));
    assert_hostile("a/../../sentinel/evil", |b, _| {
        raw(b, "a/../../sentinel/evil", EntryType::Regular, "", b"x")
    });
    assert_hostile("/../sentinel/evil", |b, _| raw(b, "/../sentinel/evil", EntryType::Regular, "", b"x"));
}

#[test]
fn symlink_out_then_write_through_fails() {
    assert_hostile("l/evil", |b, _| {
        raw(b, "l", EntryType::Symlink, "../sentinel", b"");
        raw(b, "l/evil", EntryType::Regular, "", b"x");
    });
    assert_hostile("l/evil", |b, sentinel| {
        raw(b, "l", EntryType::Symlink, sentinel, b"");
        raw(b, "l/evil", EntryType::Regular, "", b"x");
    });
    // A chain of links: a -> b -> ../../sentinel.
    assert_hostile("a/evil", |b, _| {
        raw(b, "a", EntryType::Symlink, "b", b"");
        raw(b, "b", EntryType::Symlink, "../../sentinel", b"");
        raw(b, "a/evil", EntryType::Regular, "", b"x");
    });
    // A directory over the link would follow it with a naive mkdir -p.
    assert_hostile("l/sub/evil", |b, sentinel| {
        raw(b, "l", EntryType::Symlink, sentinel, b"");
        raw(b, "l/sub/evil", EntryType::Regular, "", b"x");
    });
}

#[test]
fn hardlink_out_fails() {
    assert_hostile("h", |b, _| raw(b, "h", EntryType::Link, "../sentinel/keep", b""));
    assert_hostile("h", |b, sentinel| raw(b, "h", EntryType::Link, &format!("{sentinel}/keep"), b""));
    assert_hostile("h", |b, sentinel| {
        raw(b, "s", EntryType::Symlink, sentinel, b"");
        raw(b, "h", EntryType::Link, "s/keep", b"");
    });
}

#[test]
fn whiteout_through_symlink_fails() {
    assert_hostile("s/.wh.keep", |b, sentinel| {
        raw(b, "s", EntryType::Symlink, sentinel, b"");
        raw(b, "s/.wh.keep", EntryType::Regular, "", b"");
    });
    assert_hostile("s/.wh..wh..opq", |b, sentinel| {
        raw(b, "s", EntryType::Symlink, sentinel, b"");
        raw(b, "s/.wh..wh..opq", EntryType::Regular, "", b"");
    });
    assert_hostile("../sentinel/.wh.keep", |b, _| {
        raw(b, "../sentinel/.wh.keep", EntryType::Regular, "", b"")
    });
}

#[test]
fn truncated_stream_fails() {
    let tar = tar_of(|b| raw(b, "big", EntryType::Regular, "", &[7u8; 10_000]));
    let cut = &tar[..512 + 4000];
    let s = Scratch::new();
    let err = extract(cut, &s.target(), "L").unwrap_err().to_string();
    assert!(err.contains("big"), "{err}");
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let err = extract(&zst[..zst.len() - 10], &s.target(), "L").unwrap_err().to_string();
    assert!(err.starts_with("layer L: "), "{err}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let err = extract(&gz[..gz.len() - 10], &s.target(), "L").unwrap_err().to_string();
    assert!(err.starts_with("layer L: "), "{err}");
    s.assert_sentinel_untouched();
}

#[test]
fn garbage_fails() {
    let s = Scratch::new();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let err = extract(&junk[..], &s.target(), "L").unwrap_err().to_string();
    assert!(err.starts_with("layer L: "), "{err}");
    s.assert_sentinel_untouched();
}

#[test]
fn whiteout_removes_what_the_layer_made() {
    let s = Scratch::new();
    let tar = tar_of(|b| {
        raw(b, "a/b/c", EntryType::Regular, "", b"x");
        raw(b, "a/.wh.b", EntryType::Regular, "", b"");
        raw(b, "a/b2/c", EntryType::Regular, "", b"y");
    });
    extract(&tar[..], &s.target(), "L").unwrap();
    assert!(fs::symlink_metadata(s.target().join("a/b")).unwrap().file_type().is_char_device());
    assert_eq!(fs::read(s.target().join("a/b2/c")).unwrap(), b"y");
}

#[test]
fn gnu_sparse_file_keeps_holes() {
    let src = Scratch::new();
    let f = src.base.join("sparse");
    {
        let file = fs::File::create(&f).unwrap();
        file.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(b"tail", (8 << 20) - 4).unwrap();
    }
    let out = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "-C"])
        .arg(&src.base)
        .args(["-cf", "-", "sparse"])
        .output();
    let Ok(out) = out else {
        eprintln!("GNU tar not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let s = Scratch::new();
    extract(&out.stdout[..], &s.target(), "L").unwrap();
    let got = s.target().join("sparse");
    let data = fs::read(&got).unwrap();
    assert_eq!(data.len(), 8 << 20);
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[data.len() - 4..], b"tail");
    assert!(data[4..data.len() - 4].iter().all(|&b| b == 0));
    assert!(fs::metadata(&got).unwrap().blocks() * 512 < 1 << 20, "holes were filled");
}

/// `KOBAKO_LAYER_BENCH=layer.tar[.gz|.zst] cargo test --release -- --ignored layer_bench`:
/// extract a real layer once and print the time (no assertion on it).
#[test]
#[ignore]
fn layer_bench() {
    let Some(path) = std::env::var_os("KOBAKO_LAYER_BENCH") else {
        return;
    };
    let s = Scratch::new();
    let start = std::time::Instant::now();
    let out = extract(fs::File::open(path).unwrap(), &s.target(), "bench").unwrap();
    eprintln!("{} entries in {:?} ({})", out.entries, start.elapsed(), out.diff_id);
}

#[test]
fn entries_over_a_symlink_replace_the_link() {
    for kind in [EntryType::Directory, EntryType::Fifo, EntryType::Symlink, EntryType::Link] {
        let s = Scratch::new();
        let sentinel = s.sentinel();
        let sentinel = sentinel.to_str().unwrap().to_string();
        let tar = tar_of(|b| {
            raw(b, "f", EntryType::Regular, "", b"x");
            raw(b, "s", EntryType::Symlink, &sentinel, b"");
            raw(
                b,
                "s",
                kind,
                if kind == EntryType::Directory || kind == EntryType::Fifo { "" } else { "f" },
                b"",
            );
        });
        extract(&tar[..], &s.target(), "L").unwrap();
        let md = fs::symlink_metadata(s.target().join("s")).unwrap();
        match kind {
            EntryType::Directory => assert!(md.is_dir()),
            EntryType::Fifo => assert!(md.file_type().is_fifo()),
            EntryType::Symlink => assert_eq!(fs::read_link(s.target().join("s")).unwrap(), Path::new("f")),
            _ => assert_eq!(md.nlink(), 2),
        }
        s.assert_sentinel_untouched();
    }
}
