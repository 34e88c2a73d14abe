//! Cgroup v2 device confinement: a BPF_PROG_TYPE_CGROUP_DEVICE program built from an allowlist
//! and attached to the container's cgroup (what runc's devicefilter and crun's ebpf.c do; on
//! v1 the devices controller's files do the same job, written from Python).

use std::io;

use libc::c_int;

use crate::error::{Error, Result};

/// One allowlist rule: `kind` is `b'a'`, `b'b'` or `b'c'`; `major`/`minor` -1 for any;
/// `access` a combination of `r`, `w` and `m` as bits (r=2, w=4, m=1, the kernel's).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRule {
    pub kind: u8,
    pub major: i64,
    pub minor: i64,
    pub access: u32,
}

const ACC_ALL: u32 = 1 | 2 | 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// Compile the allowlist: the first rule that matches allows; nothing matching denies.
///
/// Registers: r2 the device type, r3 the access asked for, r4 major, r5 minor (loaded from
/// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        // The checks of one rule, each jumping past the rule's end when it does not match.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        match rule.kind {
            b'b' => checks.push(vec![insn(JNE_K, 2, 0, 0, DEV_BLOCK)]),
            b'c' => checks.push(vec![insn(JNE_K, 2, 0, 0, DEV_CHAR)]),
            _ => {}
        }
        if rule.access & ACC_ALL != ACC_ALL {
            // every access asked for must be in the rule's
            checks.push(vec![
                insn(MOV32_X, 1, 3, 0, 0),
                insn(AND32_K, 1, 0, 0, rule.access as i32),
                insn(JNE_X, 1, 3, 0, 0),
            ]);
        }
        if rule.major >= 0 {
            checks.push(vec![insn(JNE_K, 4, 0, 0, rule.major as i32)]);
        }
        if rule.minor >= 0 {
            checks.push(vec![insn(JNE_K, 5, 0, 0, rule.minor as i32)]);
        }
        let body: usize = checks.iter().map(Vec::len).sum();
        let end = body + 2; // the allow: r0 = 1; exit
        let mut at = 0;
        for check in checks {
            for mut i in check {
                at += 1;
                if i.code == JNE_K || i.code == JNE_X {
                    i.off = (end - at) as i16;
                }
                p.push(i);
            }
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: c_int = 5;
const BPF_PROG_ATTACH: c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `bpf_attr` fields of BPF_PROG_LOAD we use (the kernel takes a prefix of the union).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The `bpf_attr` fields of BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: c_int, attr: &T) -> c_int {
    // SAFETY: attr is a properly laid out prefix of union bpf_attr, and its size is passed.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) as c_int }
}

/// Load the allowlist's program and attach it to the cgroup directory `cgroup_fd`.
///
/// The attachment lives as long as the cgroup; the program's fd is closed here.
pub fn attach(cgroup_fd: c_int, rules: &[DeviceRule]) -> Result<()> {
    let insns = program(rules);
    let load = |log: &mut [u8]| {
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: c"Apache-2.0".as_ptr() as u64,
            log_level: if log.is_empty() { 0 } else { 1 },
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            ..Default::default()
        };
        bpf(BPF_PROG_LOAD, &attr)
    };
    let mut prog = load(&mut []);
    if prog < 0 {
        // Load again with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 16];
        prog = load(&mut log);
        let source = io::Error::last_os_error();
        if prog < 0 {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            let last = verifier.trim().lines().last().unwrap_or("").to_string();
            let source = if last.is_empty() { source } else { io::Error::other(format!("{source}: {last}")) };
            return Err(Error::Os { what: "loading the device filter", source });
        }
    }
    let attach = ProgAttach {
        target_fd: cgroup_fd as u32,
        attach_bpf_fd: prog as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    let rc = bpf(BPF_PROG_ATTACH, &attach);
    let err = io::Error::last_os_error();
    // SAFETY: prog is our fd; the attachment holds its own reference.
    unsafe { libc::close(prog) };
    if rc < 0 {
        return Err(Error::Os { what: "attaching the device filter", source: err });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interpret the program the way the kernel would, for the registers it uses.
    fn run(p: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> i64 {
        let ctx = [((access << 16) | kind as u32), major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as i64,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as i64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as i64,
                MOV32_X => r[dst] = r[src] as u32 as i64,
                MOV64_K => r[dst] = i.imm as i64,
                JNE_K if r[dst] != i.imm as i64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn allowlist_semantics() {
        let rules = [
            DeviceRule { kind: b'c', major: -1, minor: -1, access: 1 },
            DeviceRule { kind: b'c', major: 1, minor: 3, access: 7 },
            DeviceRule { kind: b'c', major: 136, minor: -1, access: 7 },
            DeviceRule { kind: b'c', major: 10, minor: 200, access: 2 | 4 },
        ];
        let p = program(&rules);
        let (r, w, m) = (2, 4, 1);
        assert_eq!(run(&p, DEV_CHAR, r | w, 1, 3), 1, "null is allowed");
        assert_eq!(run(&p, DEV_CHAR, m, 8, 0), 1, "mknod of any char device");
        assert_eq!(run(&p, DEV_CHAR, r, 8, 0), 0, "but not reading it");
        assert_eq!(run(&p, DEV_BLOCK, m, 8, 0), 0, "no block devices at all");
        assert_eq!(run(&p, DEV_BLOCK, r, 1, 3), 0, "a block device with null's numbers");
        assert_eq!(run(&p, DEV_CHAR, w, 136, 7), 1, "any pty");
        assert_eq!(run(&p, DEV_CHAR, r | w, 10, 200), 1, "tun rw");
        assert_eq!(run(&p, DEV_CHAR, m, 10, 201), 1, "mknod via the first rule");
        assert_eq!(run(&p, DEV_CHAR, r | m, 10, 200), 0, "tun: m not in its rule, r not in the first");
        assert_eq!(run(&program(&[]), DEV_CHAR, r, 1, 3), 0, "empty allowlist denies");
    }
}
