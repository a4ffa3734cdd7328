//! The default seccomp filter as one classic-BPF program: the architecture check, then a
//! binary search over the sorted syscall numbers that get an answer other than "allow".
//!
//! Why not a rule list compiled by seccompiler: it emits a linear chain of comparisons per
//! filter (and one filter per return action), and when a filter is installed the kernel
//! emulates it for every syscall number of every architecture to fill its action cache, with
//! interrupts off: about 0.15 ms per agent start on the VM we measured. A search tree makes
//! every path a handful of instructions, and one program is compiled and cached once.

use seccompiler::{sock_filter, BpfProgram};

/// What the filter answers for a syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `ERRNO(errno)`.
    Errno(u32),
    /// `ERRNO(EPERM)` when the first argument (its low 32 bits) has all bits of the mask
    /// set, else allow (`clone` with `CLONE_NEWUSER`).
    ErrnoIfArg0Has { mask: u32, errno: u32 },
}

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of `args[0]` (little endian).
const ARG0_LOW: u32 = 16;

/// `AUDIT_ARCH_*` of the architecture this is built for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xc000_00f3;

/// On x86_64, syscall numbers of the x32 ABI have this bit: all refused (EPERM), so the
/// blocked calls cannot be reached by their x32 numbers.
#[cfg(target_arch = "x86_64")]
const X32_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_BIT: Option<u32> = None;

/// A jump target while the program is laid out.
type Label = usize;

enum Op {
    Ld(u32),
    And(u32),
    Ja(Label),
    Jeq(u32, Label),
    Jge(u32, Label),
    Ret(u32),
    Here(Label),
}

struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }

    /// A binary search over `keys` (sorted, distinct): a matching number jumps to its label,
    /// every other to `miss`.
    fn search(&mut self, keys: &[(u32, Label)], miss: Label) {
        if keys.len() <= 4 {
            for &(nr, to) in keys {
                self.ops.push(Op::Jeq(nr, to));
            }
            self.ops.push(Op::Ja(miss));
            return;
        }
        let mid = keys.len() / 2;
        let upper = self.label();
        self.ops.push(Op::Jge(keys[mid].0, upper));
        self.search(&keys[..mid], miss);
        self.ops.push(Op::Here(upper));
        self.search(&keys[mid..], miss);
    }

    /// Resolves labels into relative jumps (at most 255 instructions forward).
    fn assemble(self) -> Result<BpfProgram, BpfError> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for op in &self.ops {
            match op {
                Op::Here(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut prog = Vec::with_capacity(pc);
        for op in &self.ops {
            let here = prog.len();
            let jump = |l: &Label| -> Result<u32, BpfError> {
                at[*l]
                    .checked_sub(here + 1)
                    .filter(|d| *d <= usize::from(u8::MAX))
                    .map(|d| d as u32)
                    .ok_or(BpfError::Jump {
                        from: here,
                        to: at[*l],
                    })
            };
            let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
            prog.push(match op {
                Op::Here(_) => continue,
                Op::Ld(off) => ins(LD_W_ABS, 0, 0, *off),
                Op::And(k) => ins(ALU_AND_K, 0, 0, *k),
                Op::Ja(l) => ins(JMP_JA, 0, 0, jump(l)?),
                Op::Jeq(k, l) => ins(JMP_JEQ_K, jump(l)? as u8, 0, *k),
                Op::Jge(k, l) => ins(JMP_JGE_K, jump(l)? as u8, 0, *k),
                Op::Ret(k) => ins(RET_K, 0, 0, *k),
            });
        }
        Ok(prog)
    }
}

/// A seccomp program that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("seccomp filter: syscall number {0} out of range")]
    Syscall(i64),
    #[error("seccomp filter: syscall number {0} is listed twice")]
    Twice(u32),
    #[error("seccomp filter: jump from {from} to {to} out of range")]
    Jump { from: usize, to: usize },
}

/// The program: kill the process on another architecture; refuse x32 numbers; answer
/// `rules`; allow everything else.
pub fn program(rules: &[(i64, Verdict)]) -> Result<BpfProgram, BpfError> {
    let mut rules: Vec<(u32, Verdict)> = rules
        .iter()
        .map(|&(nr, v)| {
            u32::try_from(nr)
                .map(|nr| (nr, v))
                .map_err(|_| BpfError::Syscall(nr))
        })
        .collect::<Result<_, _>>()?;
    rules.sort_by_key(|r| r.0);
    if let Some(w) = rules.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(BpfError::Twice(w[0].0));
    }
    let mut a = Asm {
        ops: Vec::new(),
        labels: 0,
    };
    let (allow, kill) = (a.label(), a.label());
    // One return label per distinct verdict.
    let mut verdicts: Vec<(Verdict, Label)> = Vec::new();
    let mut keys = Vec::with_capacity(rules.len());
    for &(nr, v) in &rules {
        let l = match verdicts.iter().find(|(w, _)| *w == v) {
            Some((_, l)) => *l,
            None => {
                let l = a.label();
                verdicts.push((v, l));
                l
            }
        };
        keys.push((nr, l));
    }
    let x32 = X32_BIT.map(|_| a.label());
    let body = a.label();
    a.ops.push(Op::Ld(ARCH));
    a.ops.push(Op::Jeq(AUDIT_ARCH, body));
    a.ops.push(Op::Ja(kill));
    a.ops.push(Op::Here(body));
    a.ops.push(Op::Ld(NR));
    if let (Some(bit), Some(l)) = (X32_BIT, x32) {
        a.ops.push(Op::Jge(bit, l));
    }
    a.search(&keys, allow);
    a.ops.push(Op::Here(allow));
    a.ops.push(Op::Ret(RET_ALLOW));
    a.ops.push(Op::Here(kill));
    a.ops.push(Op::Ret(RET_KILL_PROCESS));
    if let Some(l) = x32 {
        a.ops.push(Op::Here(l));
        a.ops.push(Op::Ret(RET_ERRNO | libc::EPERM as u32));
    }
    for (v, l) in verdicts {
        a.ops.push(Op::Here(l));
        match v {
            Verdict::Errno(e) => a.ops.push(Op::Ret(RET_ERRNO | e)),
            Verdict::ErrnoIfArg0Has { mask, errno } => {
                let refuse = a.label();
                a.ops.push(Op::Ld(ARG0_LOW));
                a.ops.push(Op::And(mask));
                a.ops.push(Op::Jeq(mask, refuse));
                a.ops.push(Op::Ret(RET_ALLOW));
                a.ops.push(Op::Here(refuse));
                a.ops.push(Op::Ret(RET_ERRNO | errno));
            }
        }
    }
    a.assemble()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on a syscall of this architecture; returns (verdict, instructions run).
    fn run(prog: &[sock_filter], nr: u32, arg0: u32) -> (u32, usize) {
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let i = &prog[pc];
            steps += 1;
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => AUDIT_ARCH,
                        ARG0_LOW => arg0,
                        k => panic!("load of offset {k}"),
                    }
                }
                ALU_AND_K => acc &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                JMP_JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
                RET_K => return (i.k, steps),
                c => panic!("instruction {c:#x}"),
            }
        }
    }

    #[test]
    fn answers_each_rule_on_a_short_path() {
        let rules: Vec<(i64, Verdict)> = (0..60)
            .map(|n| (n * 7, Verdict::Errno(1)))
            .chain([(
                1000,
                Verdict::ErrnoIfArg0Has {
                    mask: 0x10,
                    errno: 2,
                },
            )])
            .collect();
        let p = program(&rules).expect("assembles");
        let mut longest = 0;
        for nr in 0..1100u32 {
            let (verdict, steps) = run(&p, nr, 0);
            longest = longest.max(steps);
            let want = if nr % 7 == 0 && nr < 420 {
                RET_ERRNO | 1
            } else {
                RET_ALLOW
            };
            assert_eq!(verdict, want, "syscall {nr}");
        }
        assert_eq!(run(&p, 1000, 0x30).0, RET_ERRNO | 2);
        // A chain would take 60+ steps for an allowed call; the tree takes about log2(61/4)
        // comparisons, four equality tests and the prologue.
        assert!(longest <= 16, "longest path {longest} instructions");
        if let Some(bit) = X32_BIT {
            assert_eq!(run(&p, bit | 2, 0).0, RET_ERRNO | libc::EPERM as u32);
        }
    }

    #[test]
    fn duplicates_and_negative_numbers_are_refused() {
        assert!(program(&[(1, Verdict::Errno(1)), (1, Verdict::Errno(2))]).is_err());
        assert!(program(&[(-1, Verdict::Errno(1))]).is_err());
    }
}
