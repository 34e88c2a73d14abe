//! Builds the per-container monitor (`monitor/`) as a freestanding static executable, which
//! the native module embeds (`process::detach::MONITOR`) and executes from a sealed memfd.
//!
//! It is a separate crate because it must not link libc or std (its resident memory is paid
//! once per running container); a nested cargo builds it with its own target directory.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("monitor");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for path in ["Cargo.toml", "src"] {
        println!("cargo:rerun-if-changed={}", manifest.join(path).display());
    }
    let target_dir = out.join("monitor-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["rustc", "--release", "--quiet", "--manifest-path"])
        .arg(manifest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-C", "relocation-model=static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"]);
    // The outer build's settings are for the extension module, not for this executable.
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" || key == "RUSTC_WRAPPER" {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("running cargo for the monitor");
    assert!(status.success(), "building the monitor failed");
    std::fs::copy(target_dir.join("release/kobako-monitor"), out.join("kobako-monitor"))
        .expect("copying the monitor");
}
