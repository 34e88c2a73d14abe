//! Seccomp: compile an evaluated profile to a classic-BPF program with libseccomp, as runc does.
//!
//! Python evaluates the OCI/Docker profile for this host (capabilities, architectures, kernel)
//! and hands over a flat [`Profile`]; [`compile`] turns it into the bytes of a
//! `struct sock_filter[]` that the child loads with `seccomp(SECCOMP_SET_MODE_FILTER)` after
//! setting `no_new_privs` itself. The program is libseccomp's, preceded (like runc's
//! `patchbpf`) by a short stub that answers `ENOSYS` to system calls newer than any the profile
//! names, so that libc falls back from a syscall the profile has never heard of instead of
//! failing with the default `EPERM`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::error::{Error, Result};

/// One condition on a system call argument: `args[index] <op> value` (`MASKED_EQ`: `value` is
/// the mask and `value_two` the expected result, as in the OCI spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCond {
    pub index: u32,
    pub op: String,
    pub value: u64,
    pub value_two: u64,
}

/// An action for some system calls, under conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: String,
    pub errno: Option<u32>,
    pub args: Vec<ArgCond>,
}

/// A profile already evaluated for this host: no `includes`/`excludes` left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default_action: String,
    pub default_errno: Option<u32>,
    pub arches: Vec<String>,
    pub rules: Vec<Rule>,
}

/// System calls have at most six arguments.
const MAX_ARGS: u32 = 6;
/// The kernel refuses longer programs (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;
/// Above this many system calls, ask libseccomp for a binary tree instead of a linear list
/// (runc's threshold; libseccomp <= 2.5.4 misbehaves with the tree and no rules at all).
const TREE_THRESHOLD: usize = 32;

/// Compile to a BPF program: the raw bytes of a `struct sock_filter[]` ready for
/// seccomp(SECCOMP_SET_MODE_FILTER).
///
/// Names libseccomp does not know are skipped, as are architectures it cannot add and rules
/// whose action is the default one (runc does the same). Conditions on the same argument are
/// split into one rule each, since libseccomp refuses two comparisons of one argument.
pub fn compile(profile: &Profile) -> Result<Vec<u8>> {
    let default = action(&profile.default_action, profile.default_errno)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(fail("cannot create the filter"))?;
    // kobako sets no_new_privs itself, only when asked to: the filter must not force it.
    ctx.set_ctl_nnp(false).map_err(fail("cannot clear the no_new_privs attribute"))?;

    let mut arches = vec![ScmpArch::native()];
    for name in &profile.arches {
        let arch =
            ScmpArch::from_str(name).map_err(|_| Error::Seccomp(format!("unknown architecture {name:?}")))?;
        // An architecture this libseccomp cannot build filters for is skipped.
        if arch != ScmpArch::Native && !arches.contains(&arch) && ctx.add_arch(arch).is_ok() {
            arches.push(arch);
        }
    }

    let mut names = 0;
    let mut adds = Vec::new();
    for rule in &profile.rules {
        let act = action(&rule.action, rule.errno)?;
        let conds = conditions(rule)?;
        names += rule.names.len();
        if act != default {
            adds.push((rule, act, conds));
        }
    }
    if names > TREE_THRESHOLD {
        // Only an optimisation: an older libseccomp without it still builds a correct filter.
        let _ = ctx.set_ctl_optimize(2);
    }
    for (rule, act, conds) in adds {
        for name in &rule.names {
            // A name unknown to libseccomp on every architecture: a syscall of a newer kernel.
            let Ok(nr) = ScmpSyscall::from_name(name) else { continue };
            let added = if shares_an_argument(&rule.args) {
                conds.iter().try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(drop))
            } else {
                ctx.add_rule_conditional(act, nr, &conds).map(drop)
            };
            added.map_err(|e| Error::Seccomp(format!("cannot add the rule for {name}: {e}")))?;
        }
    }

    let filter = export(&ctx)?;
    let mut program = Vec::new();
    if wants_enosys_stub(default) {
        for insn in enosys_stub(&arches, &profile.rules)? {
            program.extend_from_slice(&insn.to_bytes());
        }
    }
    program.extend_from_slice(&filter);
    if program.len() / INSN_SIZE > MAX_INSNS {
        return Err(Error::Seccomp(format!(
            "the program has {} instructions, more than the kernel's {MAX_INSNS}",
            program.len() / INSN_SIZE
        )));
    }
    Ok(program)
}

/// `map_err` helper: a libseccomp failure, said in kobako's words.
fn fail(what: &'static str) -> impl Fn(libseccomp::error::SeccompError) -> Error {
    move |e| Error::Seccomp(format!("{what}: {e}"))
}

/// An OCI action name and its errno (EPERM when an ERRNO or TRACE action has none, as runc).
fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction> {
    let data = || -> Result<u16> {
        let errno = errno.unwrap_or(libc::EPERM as u32);
        u16::try_from(errno).map_err(|_| Error::Seccomp(format!("errno {errno} out of range")))
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(i32::from(data()?)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(data()?),
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_NOTIFY" => return Err(Error::Seccomp("action SCMP_ACT_NOTIFY is not supported".into())),
        _ => return Err(Error::Seccomp(format!("unknown action {name:?}"))),
    })
}

/// The rule's argument conditions in libseccomp's form.
fn conditions(rule: &Rule) -> Result<Vec<ScmpArgCompare>> {
    let name = rule.names.first().map_or("", String::as_str);
    rule.args
        .iter()
        .map(|a| {
            if a.index >= MAX_ARGS {
                return Err(Error::Seccomp(format!("{name}: argument index {} out of range", a.index)));
            }
            let (op, datum) = match a.op.as_str() {
                "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, a.value),
                "SCMP_CMP_LT" => (ScmpCompareOp::Less, a.value),
                "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, a.value),
                "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, a.value),
                "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, a.value),
                "SCMP_CMP_GT" => (ScmpCompareOp::Greater, a.value),
                "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
                op => return Err(Error::Seccomp(format!("{name}: unknown operator {op:?}"))),
            };
            Ok(ScmpArgCompare::new(a.index, op, datum))
        })
        .collect()
}

/// Whether two conditions test the same argument (runc then adds one rule per condition).
fn shares_an_argument(args: &[ArgCond]) -> bool {
    args.iter().enumerate().any(|(i, a)| args[..i].iter().any(|b| b.index == a.index))
}

/// libseccomp 2.5 exports only to a file descriptor: export into a memfd and read it back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    // SAFETY: a static NUL-terminated name and valid flags; the result is checked below.
    let fd = unsafe { libc::memfd_create(c"kobako-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file).map_err(fail("cannot export the filter"))?;
    let mut bpf = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|source| Error::Os { what: "read the exported seccomp filter", source })?;
    if bpf.is_empty() || bpf.len() % INSN_SIZE != 0 {
        return Err(Error::Seccomp(format!("libseccomp exported {} bytes", bpf.len())));
    }
    Ok(bpf)
}

// --- The -ENOSYS stub (runc's libcontainer/seccomp/patchbpf, in spirit) ---------------------

/// `sizeof(struct sock_filter)`.
const INSN_SIZE: usize = 8;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// x32 system calls are x86-64 ones with this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

impl Insn {
    fn to_bytes(self) -> [u8; INSN_SIZE] {
        let mut b = [0; INSN_SIZE];
        b[..2].copy_from_slice(&self.code.to_ne_bytes());
        b[2] = self.jt;
        b[3] = self.jf;
        b[4..].copy_from_slice(&self.k.to_ne_bytes());
        b
    }
}

/// Where a stub instruction jumps, resolved once the stub's length is known.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// The instruction after the next one.
    SkipOne,
    /// The stub's `ret ERRNO(ENOSYS)`.
    Enosys,
    /// The first instruction of libseccomp's program.
    Filter,
    /// The section of the i-th architecture.
    Section(usize),
}

/// A stub instruction before its jumps are resolved (`k` is unused by `ja`).
#[derive(Debug, Clone, Copy)]
struct Op {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

impl Op {
    fn load(offset: u32) -> Op {
        Op { code: BPF_LD_W_ABS, k: offset, jt: To::Next, jf: To::Next }
    }
    fn jump(code: u16, k: u32, jt: To, jf: To) -> Op {
        Op { code, k, jt, jf }
    }
    fn ja(to: To) -> Op {
        Op { code: BPF_JA, k: 0, jt: to, jf: to }
    }
    fn ret(k: u32) -> Op {
        Op { code: BPF_RET_K, k, jt: To::Next, jf: To::Next }
    }
    /// `nr > last` -> ENOSYS, else the filter; no last syscall: straight to the filter.
    fn past(last: Option<u32>) -> Op {
        match last {
            Some(last) => Op::jump(BPF_JGT_K, last, To::Enosys, To::Filter),
            None => Op::ja(To::Filter),
        }
    }
}

/// The stub is only useful when unknown system calls would otherwise be refused; a default of
/// ENOSYS needs no help (runc: allow, log and trace are permissive).
fn wants_enosys_stub(default: ScmpAction) -> bool {
    !matches!(
        default,
        ScmpAction::Allow | ScmpAction::Log | ScmpAction::Trace(_) | ScmpAction::Errno(libc::ENOSYS)
    )
}

/// `AUDIT_ARCH_*` of an architecture (linux/audit.h), as `seccomp_data.arch` reports it.
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    const B64: u32 = 0x8000_0000;
    const LE: u32 = 0x4000_0000;
    const N32: u32 = 0x2000_0000;
    Some(match arch {
        ScmpArch::X86 => 3 | LE,
        ScmpArch::X8664 | ScmpArch::X32 => 62 | B64 | LE,
        ScmpArch::Arm => 40 | LE,
        ScmpArch::Aarch64 => 183 | B64 | LE,
        ScmpArch::Mips => 8,
        ScmpArch::Mipsel => 8 | LE,
        ScmpArch::Mips64 => 8 | B64,
        ScmpArch::Mipsel64 => 8 | B64 | LE,
        ScmpArch::Mips64N32 => 8 | B64 | N32,
        ScmpArch::Mipsel64N32 => 8 | B64 | LE | N32,
        ScmpArch::Ppc => 20,
        ScmpArch::Ppc64 => 21 | B64,
        ScmpArch::Ppc64Le => 21 | B64 | LE,
        ScmpArch::S390 => 22,
        ScmpArch::S390X => 22 | B64,
        ScmpArch::Riscv64 => 243 | B64 | LE,
        ScmpArch::Loongarch64 => 258 | B64 | LE,
        _ => return None,
    })
}

/// The largest system call number the profile names on `arch`, if it names any there.
fn last_syscall(arch: ScmpArch, rules: &[Rule]) -> Option<u32> {
    let numbers = rules.iter().flat_map(|r| &r.names).filter_map(|name| {
        let nr = ScmpSyscall::from_name_by_arch(name, arch).ok()?.as_raw_syscall();
        u32::try_from(nr).ok() // negative: a pseudo-syscall, absent from this architecture
    });
    numbers.max()
}

/// The architectures that share one `AUDIT_ARCH_*` value (only x86-64 and x32 do).
struct ArchGroup {
    audit: u32,
    arch: ScmpArch,
    last: Option<u32>,
    last_x32: Option<u32>,
}

/// Build the stub: for each architecture of the filter, `nr > last syscall named` -> ENOSYS;
/// everything else, and architectures not in the filter, go on to libseccomp's program.
///
/// ```text
///     ld [arch]; jeq AUDIT_1 -> s1; jeq AUDIT_2 -> s2; ...; ja filter
/// s1: ld [nr]; jgt LAST_1 -> enosys, filter
/// sN: ld [nr]; jset X32_BIT -> +1; jgt LAST_X86_64 -> enosys, filter; jgt LAST_X32 -> ...
///     ret ERRNO(ENOSYS)
/// filter: ...
/// ```
fn enosys_stub(arches: &[ScmpArch], rules: &[Rule]) -> Result<Vec<Insn>> {
    let mut groups: Vec<ArchGroup> = Vec::new();
    for &arch in arches {
        let (Some(audit), Some(last)) = (audit_arch(arch), last_syscall(arch, rules)) else {
            continue;
        };
        let i = match groups.iter().position(|g| g.audit == audit) {
            Some(i) => i,
            None => {
                groups.push(ArchGroup { audit, arch, last: None, last_x32: None });
                groups.len() - 1
            }
        };
        if arch == ScmpArch::X32 {
            groups[i].last_x32 = Some(last);
        } else {
            groups[i].arch = arch;
            groups[i].last = Some(last);
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }

    let mut ops = vec![Op::load(DATA_ARCH)];
    for (i, g) in groups.iter().enumerate() {
        ops.push(Op::jump(BPF_JEQ_K, g.audit, To::Section(i), To::Next));
    }
    ops.push(Op::ja(To::Filter));
    let mut sections = Vec::with_capacity(groups.len());
    for g in &groups {
        sections.push(ops.len());
        ops.push(Op::load(DATA_NR));
        if g.audit == audit_arch(ScmpArch::X8664).unwrap_or_default() {
            // One audit arch, two ABIs: the x32 bit tells them apart.
            ops.push(Op::jump(BPF_JSET_K, X32_SYSCALL_BIT, To::SkipOne, To::Next));
            ops.push(Op::past(g.last));
            ops.push(Op::past(g.last_x32));
        } else {
            if matches!(g.arch, ScmpArch::S390 | ScmpArch::S390X) {
                // s390 multiplexes large syscall numbers through number 0; unknown ones stay 0.
                ops.push(Op::jump(BPF_JEQ_K, 0, To::Enosys, To::Next));
            }
            ops.push(Op::past(g.last));
        }
    }
    let enosys = ops.len();
    ops.push(Op::ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    let filter = ops.len();

    let mut stub = Vec::with_capacity(ops.len());
    for (at, op) in ops.iter().enumerate() {
        // Jumps are relative to the next instruction, and only ever forwards.
        let offset = |to: To| match to {
            To::Next => 0,
            To::SkipOne => 1,
            To::Enosys => enosys - at - 1,
            To::Filter => filter - at - 1,
            To::Section(i) => sections[i] - at - 1,
        };
        let short =
            |to: To| u8::try_from(offset(to)).map_err(|_| Error::Seccomp("-ENOSYS stub too long".into()));
        stub.push(match op.code {
            BPF_JA => Insn { code: BPF_JA, jt: 0, jf: 0, k: offset(op.jt) as u32 },
            BPF_JEQ_K | BPF_JGT_K | BPF_JSET_K => {
                Insn { code: op.code, jt: short(op.jt)?, jf: short(op.jf)?, k: op.k }
            }
            _ => Insn { code: op.code, jt: 0, jf: 0, k: op.k },
        });
    }
    Ok(stub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], action: &str, errno: Option<u32>, args: Vec<ArgCond>) -> Rule {
        Rule { names: names.iter().map(|s| s.to_string()).collect(), action: action.into(), errno, args }
    }

    fn cond(index: u32, op: &str, value: u64, value_two: u64) -> ArgCond {
        ArgCond { index, op: op.into(), value, value_two }
    }

    fn profile(default_action: &str, arches: &[&str], rules: Vec<Rule>) -> Profile {
        Profile {
            default_action: default_action.into(),
            default_errno: Some(1),
            arches: arches.iter().map(|s| s.to_string()).collect(),
            rules,
        }
    }

    fn insns(bpf: &[u8]) -> Vec<Insn> {
        bpf.chunks_exact(INSN_SIZE)
            .map(|c| Insn {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect()
    }

    #[test]
    fn tiny_profile_compiles_to_whole_instructions() {
        let p =
            profile("SCMP_ACT_ERRNO", &[], vec![rule(&["read", "write"], "SCMP_ACT_ALLOW", None, vec![])]);
        let bpf = compile(&p).unwrap();
        assert!(!bpf.is_empty());
        assert_eq!(bpf.len() % INSN_SIZE, 0);
        // Every program ends in a return.
        assert_eq!(insns(&bpf).last().unwrap().code & 0x07, BPF_RET_K & 0x07); // class BPF_RET
    }

    #[test]
    fn docker_like_rules_compile_for_x86_family() {
        let mask = 0x7E02_0000; // CLONE_NEW* flags, as moby's profile has it
        let p = Profile {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno: Some(1),
            arches: vec!["SCMP_ARCH_X86_64".into(), "SCMP_ARCH_X86".into(), "SCMP_ARCH_X32".into()],
            rules: vec![
                rule(
                    &["read", "write", "socketcall", "chown32", "no_such_syscall"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![],
                ),
                rule(&["socket"], "SCMP_ACT_ALLOW", None, vec![cond(0, "SCMP_CMP_NE", 40, 0)]),
                rule(&["personality"], "SCMP_ACT_ALLOW", None, vec![cond(0, "SCMP_CMP_EQ", 0xffff_ffff, 0)]),
                rule(&["clone"], "SCMP_ACT_ALLOW", None, vec![cond(0, "SCMP_CMP_MASKED_EQ", mask, 0)]),
                rule(&["clone3"], "SCMP_ACT_ERRNO", Some(38), vec![]),
                // Two conditions on one argument: split into two rules, as runc does.
                rule(
                    &["prctl"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![cond(0, "SCMP_CMP_GE", 1, 0), cond(0, "SCMP_CMP_LE", 10, 0)],
                ),
                // Same action as the default: skipped rather than refused by libseccomp.
                rule(&["mount"], "SCMP_ACT_ERRNO", Some(1), vec![]),
            ],
        };
        let bpf = compile(&p).unwrap();
        assert_eq!(bpf.len() % INSN_SIZE, 0);
        let prog = insns(&bpf);
        assert!(prog.len() < MAX_INSNS);
        // The stub comes first: load the arch, then ENOSYS for numbers past the last named one.
        assert_eq!(prog[0], Insn { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: DATA_ARCH });
        let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert!(prog.iter().any(|i| i.code == BPF_RET_K && i.k == enosys));
        assert!(prog.iter().any(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_ERRNO | 38));
    }

    #[test]
    fn names_of_other_architectures_are_skipped_on_native_only_filters() {
        // socketcall and chown32 do not exist on x86-64, set_tls only on ARM: libseccomp
        // knows the names, and adds nothing for an architecture that lacks them.
        let names = ["read", "socketcall", "chown32", "set_tls", "arm_fadvise64_64"];
        let p = profile("SCMP_ACT_ERRNO", &[], vec![rule(&names, "SCMP_ACT_ALLOW", None, vec![])]);
        assert_eq!(compile(&p).unwrap().len() % INSN_SIZE, 0);
    }

    #[test]
    fn permissive_default_has_no_stub() {
        let p = profile("SCMP_ACT_ALLOW", &[], vec![rule(&["mount"], "SCMP_ACT_ERRNO", None, vec![])]);
        let prog = insns(&compile(&p).unwrap());
        let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert!(!prog.iter().any(|i| i.code == BPF_RET_K && i.k == enosys));
        // ERRNO with no errno means EPERM.
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert!(prog.iter().any(|i| i.code == BPF_RET_K && i.k == eperm));
    }

    #[test]
    fn stub_jumps_land_inside_the_program() {
        let p = profile(
            "SCMP_ACT_KILL_PROCESS",
            &["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            vec![rule(&["read"], "SCMP_ACT_ALLOW", None, vec![])],
        );
        let prog = insns(&compile(&p).unwrap());
        for (at, i) in prog.iter().enumerate() {
            if i.code == BPF_JA {
                assert!(at + 1 + (i.k as usize) < prog.len());
            } else if matches!(i.code, BPF_JEQ_K | BPF_JGT_K | BPF_JSET_K) {
                assert!(at + 1 + usize::from(i.jt.max(i.jf)) < prog.len());
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let bad = [
            profile("SCMP_ACT_NOTIFY", &[], vec![]),
            profile("SCMP_ACT_BOGUS", &[], vec![]),
            profile("SCMP_ACT_ERRNO", &["SCMP_ARCH_VAX"], vec![]),
            profile("SCMP_ACT_ERRNO", &[], vec![rule(&["read"], "SCMP_ACT_NOTIFY", None, vec![])]),
            profile(
                "SCMP_ACT_ERRNO",
                &[],
                vec![rule(&["read"], "SCMP_ACT_ALLOW", None, vec![cond(6, "SCMP_CMP_EQ", 0, 0)])],
            ),
            profile(
                "SCMP_ACT_ERRNO",
                &[],
                vec![rule(&["read"], "SCMP_ACT_ALLOW", None, vec![cond(0, "SCMP_CMP_XX", 0, 0)])],
            ),
            profile("SCMP_ACT_ERRNO", &[], vec![rule(&["read"], "SCMP_ACT_ERRNO", Some(70_000), vec![])]),
        ];
        for p in bad {
            let err = compile(&p).unwrap_err();
            assert!(matches!(err, Error::Seccomp(_)), "{err}");
        }
    }
}
