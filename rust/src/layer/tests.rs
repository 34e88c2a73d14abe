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
    let out = extract(&tar[..], None, &s.target(), "L").unwrap();
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
        let out = extract(&blob[..], None, &s.target(), "L").unwrap();
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
    extract(&tar[..], None, &s.target(), "L").unwrap();
    let w = fs::symlink_metadata(s.target().join("a/gone")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!((w.rdev(), w.uid(), w.gid()), (0, 0, 0));
    assert!(!s.target().join("a/.wh.gone").exists());
    assert_eq!(xattr(&s.target().join("c"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!s.target().join("c/.wh..wh..opq").exists());
    assert!(s.target().join("c/kept").exists());
}

#[test]
fn absolute_names_fail() {
    assert_hostile("/etc/passwd", |b, _| raw(b, "/etc/passwd", EntryType::Regular, "", b"root"));
    assert_hostile("/", |b, _| raw(b, "/", EntryType::Directory, "", b""));
    assert_hostile("h", |b, _| {
        raw(b, "f", EntryType::Regular, "", b"x");
        raw(b, "h", EntryType::Link, "/f", b"");
    });
}

#[test]
fn regular_file_over_a_symlink_fails() {
    assert_hostile("s", |b, sentinel| {
        raw(b, "s", EntryType::Symlink, &format!("{sentinel}/keep"), b"");
        raw(b, "s", EntryType::Regular, "", b"evil");
    });
}

/// Each hostile layer fails, names the layer and the entry, and writes nothing outside.
fn assert_hostile(entry: &str, build: impl FnOnce(&mut Builder<Vec<u8>>, &str)) {
    let s = Scratch::new();
    let sentinel = s.sentinel();
    let sentinel = sentinel.to_str().unwrap().to_string();
    let tar = tar_of(|b| build(b, &sentinel));
    let err = extract(&tar[..], None, &s.target(), "sha256:bad").unwrap_err().to_string();
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
    let err = extract(cut, None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.contains("big"), "{err}");
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let err = extract(&zst[..zst.len() - 10], None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.starts_with("layer L: "), "{err}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let err = extract(&gz[..gz.len() - 10], None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.starts_with("layer L: "), "{err}");
    s.assert_sentinel_untouched();
}

#[test]
fn garbage_fails() {
    let s = Scratch::new();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let err = extract(&junk[..], None, &s.target(), "L").unwrap_err().to_string();
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
    extract(&tar[..], None, &s.target(), "L").unwrap();
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
    extract(&out.stdout[..], None, &s.target(), "L").unwrap();
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
    let out = extract(fs::File::open(path).unwrap(), None, &s.target(), "bench").unwrap();
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
        extract(&tar[..], None, &s.target(), "L").unwrap();
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

// --- Packing: the tree → tar direction, checked by extracting what it wrote. ---

fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    // SAFETY: valid strings and buffer.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {key} on {}", path.display());
}

fn mknod(path: &Path, fmt: libc::mode_t, dev: libc::dev_t) {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid string.
    assert_eq!(unsafe { libc::mknod(p.as_ptr(), fmt | 0o640, dev) }, 0, "mknod {}", path.display());
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn set_mtime(path: &Path, mtime: i64) {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let t = [libc::timespec { tv_sec: mtime, tv_nsec: 0 }, libc::timespec { tv_sec: mtime, tv_nsec: 0 }];
    // SAFETY: valid string and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0);
}

/// A tree with every kind of entry the packer writes, and fields that need PAX records.
fn rich_tree(root: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let long_dir = root.join("long").join("d".repeat(120));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(150)), b"long").unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("sg")).unwrap();
    fs::set_permissions(root.join("sg"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::write(root.join("sg/suid"), b"#!/bin/sh\n").unwrap();
    lchown(&root.join("sg/suid"), 3_000_000, 4_000_000);
    fs::set_permissions(root.join("sg/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let caps = [1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    set_xattr(&root.join("sg/suid"), "security.capability", &caps);
    set_xattr(&root.join("sg/suid"), "user.note", b"binary\x00\xff=value");
    fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("big"), &big).unwrap();
    fs::hard_link(root.join("big"), root.join("tmp/big-link")).unwrap();
    symlink("sg/suid", root.join("rel-link")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    symlink(long_dir.join("f".repeat(150)), root.join("long-target")).unwrap();
    lchown(&root.join("rel-link"), 7, 8);
    mknod(&root.join("null"), libc::S_IFCHR, libc::makedev(1, 3));
    mknod(&root.join("loop9"), libc::S_IFBLK, libc::makedev(7, 9));
    mknod(&root.join("fifo"), libc::S_IFIFO, 0);
    set_xattr(&root.join("tmp"), "trusted.kobako", b"dir");
    for (i, p) in ["empty", "big", "rel-link", "dangling", "null", "fifo", "sg/suid", "sg", "tmp", "long"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64);
    }
}

/// Every entry below `root`: its type, mode, owner, mtime, contents or target, xattrs, and the
/// first path of its inode when it has several links.
fn snapshot(root: &Path) -> Vec<String> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut Vec<String>,
        inodes: &mut std::collections::HashMap<u64, String>,
    ) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("file {}", sha(&fs::read(&p).unwrap()))
            } else {
                format!("node {:o} {}", md.mode() & libc::S_IFMT, md.rdev())
            };
            let linked = if !ft.is_dir() && md.nlink() > 1 {
                inodes.entry(md.ino()).or_insert_with(|| rel.clone()).clone()
            } else {
                String::new()
            };
            let mut keys = Vec::new();
            for key in ["security.capability", "user.note", "trusted.kobako", "trusted.overlay.opaque"] {
                if let Some(v) = xattr(&p, key) {
                    keys.push(format!("{key}={v:?}"));
                }
            }
            out.push(format!(
                "{rel}: {what} mode={:o} {}:{} mtime={} nlink-group={linked} xattrs={keys:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.mtime()
            ));
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out, &mut std::collections::HashMap::new());
    out
}

fn pack_to_vec(root: &Path, compression: super::Compression, overlay: bool) -> (super::Packed, Vec<u8>) {
    let mut out = Vec::new();
    let packed = super::pack(root, &mut out, compression, overlay).unwrap();
    (packed, out)
}

#[test]
fn pack_round_trip() {
    use super::Compression;
    let src = Scratch::new();
    rich_tree(&src.target());
    let want = snapshot(&src.target());
    for compression in [Compression::None, Compression::Gzip(6), Compression::Zstd(3)] {
        let (packed, blob) = pack_to_vec(&src.target(), compression, false);
        assert_eq!(packed.size, blob.len() as u64);
        assert_eq!(packed.compressed_digest, sha(&blob));
        let (again, blob_again) = pack_to_vec(&src.target(), compression, false);
        assert_eq!((&again, &blob_again), (&packed, &blob), "{compression:?} is not deterministic");
        let dst = Scratch::new();
        let out = extract(&blob[..], None, &dst.target(), "L").unwrap();
        assert_eq!((out.diff_id, out.compressed_digest), (packed.diff_id.clone(), packed.compressed_digest));
        assert_eq!(snapshot(&dst.target()), want, "{compression:?}");
        if compression == Compression::None {
            assert_eq!(packed.diff_id, sha(&blob));
        }
    }
}

#[test]
fn packed_tar_reads_as_gnu_tar_writes_names() {
    let src = Scratch::new();
    rich_tree(&src.target());
    let (_, tar) = pack_to_vec(&src.target(), super::Compression::None, false);
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(names[0], "big");
    assert!(names.contains(&"sg/".to_string()), "{names:?}");
    assert!(names.contains(&"sg/suid".to_string()), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('/') && !n.starts_with("./") && !n.is_empty()));
    let long = format!("long/{}/{}", "d".repeat(120), "f".repeat(150));
    assert!(names.contains(&long), "{names:?}");
}

#[test]
fn whiteouts_convert_both_ways() {
    use super::Compression;
    let s = Scratch::new();
    let layer = tar_of(|b| {
        raw(b, "a/", EntryType::Directory, "", b"");
        raw(b, "a/.wh.gone", EntryType::Regular, "", b"");
        raw(b, "a/.wh.also", EntryType::Regular, "", b"");
        raw(b, "c/", EntryType::Directory, "", b"");
        raw(b, "c/.wh..wh..opq", EntryType::Regular, "", b"");
        raw(b, "c/kept", EntryType::Regular, "", b"x");
    });
    extract(&layer[..], None, &s.target(), "L").unwrap();
    // overlayfs shares one whiteout inode between whiteouts: a link must not become a Link.
    fs::remove_file(s.target().join("a/also")).unwrap();
    fs::hard_link(s.target().join("a/gone"), s.target().join("a/also")).unwrap();
    set_xattr(&s.target().join("a"), "trusted.overlay.origin", b"\x00\xfb");

    let (packed, tar) = pack_to_vec(&s.target(), Compression::None, true);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut got = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let kind = e.header().entry_type();
        let pax: Vec<String> = match e.pax_extensions().unwrap() {
            Some(exts) => exts.map(|x| x.unwrap().key().unwrap().to_string()).collect(),
            None => Vec::new(),
        };
        got.push((name, kind, e.size(), pax));
    }
    let reg = EntryType::Regular;
    let dir = EntryType::Directory;
    assert_eq!(
        got,
        [
            ("a/".to_string(), dir, 0, vec![]),
            ("a/.wh.also".to_string(), reg, 0, vec![]),
            ("a/.wh.gone".to_string(), reg, 0, vec![]),
            ("c/".to_string(), dir, 0, vec![]),
            ("c/.wh..wh..opq".to_string(), reg, 0, vec![]),
            ("c/kept".to_string(), reg, 1, vec![]),
        ]
    );
    // Extracting what was packed gives the overlay form back.
    let again = Scratch::new();
    let out = extract(&tar[..], None, &again.target(), "L").unwrap();
    assert_eq!(out.diff_id, packed.diff_id);
    for name in ["a/gone", "a/also"] {
        let md = fs::symlink_metadata(again.target().join(name)).unwrap();
        assert!(md.file_type().is_char_device() && md.rdev() == 0, "{name}");
    }
    assert_eq!(xattr(&again.target().join("c"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&again.target().join("a"), "trusted.overlay.origin"), None);

    // Without the conversion, the overlay form is kept as it is (devices and xattrs).
    let (_, plain) = pack_to_vec(&s.target(), Compression::None, false);
    let kinds: Vec<_> = tar::Archive::new(&plain[..])
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (String::from_utf8(e.path_bytes().into_owned()).unwrap(), e.header().entry_type())
        })
        .collect();
    assert!(kinds.contains(&("a/also".to_string(), EntryType::Char)), "{kinds:?}");
    assert!(kinds.contains(&("a/gone".to_string(), EntryType::Link)), "{kinds:?}");
    let dst = Scratch::new();
    extract(&plain[..], None, &dst.target(), "L").unwrap();
    assert_eq!(xattr(&dst.target().join("a"), "trusted.overlay.origin").as_deref(), Some(&b"\x00\xfb"[..]));
}

#[test]
fn zstd_workers_do_not_change_the_bytes() {
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 20) as u8).collect();
    let mut outs = Vec::new();
    for workers in [1, 2, 4] {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        enc.multithread(workers).unwrap();
        enc.write_all(&data).unwrap();
        outs.push(enc.finish().unwrap());
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
}

#[test]
fn pack_errors_name_the_source() {
    let err = super::pack(Path::new("/nonexistent/kobako"), Vec::new(), super::Compression::None, false)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("layer /nonexistent/kobako: "), "{err}");
}

#[test]
fn pax_values_may_hold_newlines() {
    let src = Scratch::new();
    let f = src.target().join("f");
    fs::write(&f, b"x").unwrap();
    // A value that a line-splitting parser would read as a `path` record of its own.
    set_xattr(&f, "user.note", b"\n19 path=evil\n\n");
    let caps = [1u8, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    set_xattr(&f, "security.capability", &caps);
    let (packed, tar) = pack_to_vec(&src.target(), super::Compression::None, false);
    let dst = Scratch::new();
    let out = extract(&tar[..], None, &dst.target(), "L").unwrap();
    assert_eq!(out.diff_id, packed.diff_id);
    let got = dst.target().join("f");
    assert_eq!(xattr(&got, "user.note").as_deref(), Some(&b"\n19 path=evil\n\n"[..]));
    assert_eq!(xattr(&got, "security.capability").as_deref(), Some(&caps[..]));
    assert!(!dst.target().join("evil").exists());
}

#[test]
fn pax_records_override_the_header() {
    let s = Scratch::new();
    let tar = tar_of(|b| {
        let long = "p/".to_string() + &"q".repeat(150);
        b.append_pax_extensions([
            ("path", long.as_bytes()),
            ("uid", &b"3000000"[..]),
            ("mtime", &b"1234.5"[..]),
            ("SCHILY.xattr.user.k", &b"v"[..]),
        ])
        .unwrap();
        raw(b, "short", EntryType::Regular, "", b"data");
        // Extension headers apply to the next entry only.
        raw(b, "plain", EntryType::Regular, "", b"");
    });
    extract(&tar[..], None, &s.target(), "L").unwrap();
    let long = s.target().join("p").join("q".repeat(150));
    let md = fs::metadata(&long).unwrap();
    assert_eq!((md.uid(), md.mtime()), (3_000_000, 1234));
    assert_eq!(xattr(&long, "user.k").as_deref(), Some(&b"v"[..]));
    assert!(!s.target().join("short").exists());
    assert_eq!(fs::metadata(s.target().join("plain")).unwrap().uid(), 0);
}

#[test]
fn bad_extension_headers_fail() {
    let s = Scratch::new();
    let tar = tar_of(|b| {
        b.append_pax_extensions([("path", &b"a"[..])]).unwrap();
        b.append_pax_extensions([("path", &b"b"[..])]).unwrap();
        raw(b, "f", EntryType::Regular, "", b"");
    });
    let err = extract(&tar[..], None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.contains("two extension headers"), "{err}");
    let tar = tar_of(|b| {
        raw(b, "f", EntryType::Regular, "", b"");
        b.append_pax_extensions([("path", &b"a"[..])]).unwrap();
    });
    let err = extract(&tar[..], None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.contains("without the entry"), "{err}");
    let mut bad = tar_of(|b| {
        b.append_pax_extensions([("path", &b"a"[..])]).unwrap();
        raw(b, "f", EntryType::Regular, "", b"");
    });
    bad[512] = b'7'; // the record's length (9) no longer matches
    let err = extract(&bad[..], None, &s.target(), "L").unwrap_err().to_string();
    assert!(err.contains("bad PAX record"), "{err}");
}
