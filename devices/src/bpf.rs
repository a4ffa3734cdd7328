//! The `BPF_PROG_TYPE_CGROUP_DEVICE` program of a rule list, hand-encoded (the layout of runc's
//! devicefilter): a prologue loads the request from `struct bpf_cgroup_dev_ctx` into
//! registers, then one block per rule from the last rule to the first returns the rule's
//! verdict when it matches, and falling off the end returns 0 (deny).
//!
//! Registers: r1 = ctx (then scratch), r2 = type (`access_type & 0xffff`: block 1, char 2),
//! r3 = access (`access_type >> 16`: mknod 1, read 2, write 4), r4 = major, r5 = minor.

use crate::{DeviceRule, DeviceType};

/// One 8-byte eBPF instruction, laid out as the kernel's `struct bpf_insn` (`#[repr(C)]`:
/// opcode, dst register in the low and src register in the high nibble, offset, immediate).
/// A program is a `Vec<Insn>`; [`Insn::to_bytes`] gives the bytes an interpreter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Class, size or operation, and source bits.
    pub code: u8,
    /// `dst | src << 4`.
    pub regs: u8,
    /// Jump offset (instructions after the next one) or memory offset.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

// Opcodes used (class | op | source), from linux/bpf.h and linux/bpf_common.h.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | src << 4,
            off,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)`
    fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(LDX_MEM_W, dst, src, off, 0)
    }

    fn alu_k(code: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(code, dst, 0, 0, imm)
    }

    fn mov_x(dst: u8, src: u8) -> Insn {
        Insn::new(ALU64_MOV_X, dst, src, 0, 0)
    }

    /// `if dst <op> imm goto +off` (off patched once the block's length is known).
    fn jmp_k(code: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(code, dst, 0, 0, imm)
    }

    fn jne_x(dst: u8, src: u8) -> Insn {
        Insn::new(JMP_JNE_X, dst, src, 0, 0)
    }

    fn exit() -> Insn {
        Insn::new(JMP_EXIT, 0, 0, 0, 0)
    }

    /// The 8 bytes of the instruction in this machine's byte order (as the kernel reads it).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }

    /// Whether this is a conditional jump (its `off` skips to the end of its rule's block).
    fn is_cond_jump(self) -> bool {
        matches!(self.code, JMP_JEQ_K | JMP_JNE_K | JMP_JNE_X)
    }
}

/// A major or minor as the 32-bit immediate the comparison takes: the kernel sign-extends it
/// to 64 bits and the loaded `u32` is zero-extended, so numbers at or past 2^31 would never
/// match; such numbers do not occur (majors are 12 bits, minors 20), and they are clamped to
/// a value that matches nothing real rather than wrapped onto another device.
fn imm(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The block for one rule: the checks, each jumping past the block when it fails, then the
/// verdict.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    let mut b = Vec::with_capacity(8);
    match rule.kind {
        DeviceType::All => {}
        DeviceType::Block => b.push(Insn::jmp_k(JMP_JNE_K, R2, DEVCG_DEV_BLOCK)),
        DeviceType::Char => b.push(Insn::jmp_k(JMP_JNE_K, R2, DEVCG_DEV_CHAR)),
    }
    if rule.access != crate::Access::ALL {
        let bits = imm(rule.access.bits());
        b.push(Insn::mov_x(R1, R3));
        b.push(Insn::alu_k(ALU64_AND_K, R1, bits));
        if rule.allow {
            // Every requested bit is in the rule's: (access & bits) == access.
            b.push(Insn::jne_x(R1, R3));
        } else {
            // Any requested bit is in the rule's: (access & bits) != 0.
            b.push(Insn::jmp_k(JMP_JEQ_K, R1, 0));
        }
    }
    if let Some(major) = rule.major {
        b.push(Insn::jmp_k(JMP_JNE_K, R4, imm(major)));
    }
    if let Some(minor) = rule.minor {
        b.push(Insn::jmp_k(JMP_JNE_K, R5, imm(minor)));
    }
    b.push(Insn::alu_k(ALU64_MOV_K, R0, i32::from(rule.allow)));
    b.push(Insn::exit());
    let len = b.len();
    for (i, insn) in b.iter_mut().enumerate() {
        if insn.is_cond_jump() {
            // From the instruction after the jump to the one after the block's exit. Blocks
            // are at most 8 instructions, so the offset fits.
            insn.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
        }
    }
    b
}

/// The program's instructions for `rules` (see the module doc). A rule that matches every
/// request (`a *:* rwm`, allow or deny) ends the program: the rules before it cannot decide
/// anything. So `group_rules` gives a program whose last block is the leading deny-all,
/// and an allow-all as the last rule gives "return 1".
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::ldx_w(R2, R1, CTX_ACCESS_TYPE),
        Insn::alu_k(ALU64_AND_K, R2, 0xffff),
        Insn::ldx_w(R3, R1, CTX_ACCESS_TYPE),
        Insn::alu_k(ALU64_RSH_K, R3, 16),
        Insn::ldx_w(R4, R1, CTX_MAJOR),
        Insn::ldx_w(R5, R1, CTX_MINOR),
    ];
    for rule in rules.iter().rev() {
        if !rule.allow && rule.access.is_empty() {
            continue; // denies no access: matches nothing
        }
        if rule.is_everything() {
            p.push(Insn::alu_k(ALU64_MOV_K, R0, i32::from(rule.allow)));
            p.push(Insn::exit());
            return p;
        }
        p.extend(rule_block(rule));
    }
    p.push(Insn::alu_k(ALU64_MOV_K, R0, 0));
    p.push(Insn::exit());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{allows, default_rules, group_rules, Access};

    fn bytes(p: &[Insn]) -> Vec<u8> {
        p.iter().flat_map(|i| i.to_bytes()).collect()
    }

    /// Runs the program in rbpf's interpreter on a `bpf_cgroup_dev_ctx`.
    fn run(code: &[u8], kind: DeviceType, major: u32, minor: u32, access: Access) -> bool {
        let ty = match kind {
            DeviceType::Block => 1u32,
            DeviceType::Char => 2,
            DeviceType::All => unreachable!("requests are char or block"),
        };
        let mut ctx = Vec::with_capacity(12);
        ctx.extend_from_slice(&(access.bits() << 16 | ty).to_ne_bytes());
        ctx.extend_from_slice(&major.to_ne_bytes());
        ctx.extend_from_slice(&minor.to_ne_bytes());
        let vm = rbpf::EbpfVmRaw::new(Some(code)).expect("rbpf accepts the program");
        match vm.execute_program(&mut ctx).expect("the program runs") {
            0 => false,
            1 => true,
            other => panic!("the program returned {other}"),
        }
    }

    fn all_access() -> Vec<Access> {
        (0..8)
            .map(|b| Access {
                mknod: b & 1 != 0,
                read: b & 2 != 0,
                write: b & 4 != 0,
            })
            .collect()
    }

    /// Every (type, major, minor, access) that can tell the rules apart: each number a rule
    /// names, and one no rule names.
    fn compare(rules: &[DeviceRule]) -> usize {
        let code = bytes(&program(rules));
        let mut majors: Vec<u32> = rules.iter().filter_map(|r| r.major).collect();
        let mut minors: Vec<u32> = rules.iter().filter_map(|r| r.minor).collect();
        majors.extend([0, 4095, 77_777]);
        minors.extend([0, 1, 77_777]);
        let mut n = 0;
        for kind in [DeviceType::Char, DeviceType::Block] {
            for &major in &majors {
                for &minor in &minors {
                    for access in all_access() {
                        let want = allows(rules, kind, major, minor, access);
                        let got = run(&code, kind, major, minor, access);
                        assert_eq!(
                            got, want,
                            "{kind:?} {major}:{minor} {access} under {rules:?}"
                        );
                        n += 1;
                    }
                }
            }
        }
        n
    }

    fn rule(
        allow: bool,
        kind: DeviceType,
        major: Option<u32>,
        minor: Option<u32>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: a.parse().unwrap(),
        }
    }

    #[test]
    fn interpreter_agrees_with_allows() {
        let gpus: Vec<DeviceRule> = (0..3)
            .map(|i| DeviceRule::allow_char(195, Some(i), Access::RW))
            .chain([DeviceRule::allow_char(195, Some(255), Access::RW)])
            .collect();
        let (c, b, a) = (DeviceType::Char, DeviceType::Block, DeviceType::All);
        let lists: Vec<Vec<DeviceRule>> = vec![
            vec![],
            default_rules(),
            group_rules(&gpus),
            group_rules(&[rule(true, a, None, None, "rwm")]),
            vec![
                rule(true, a, None, None, "rwm"),
                rule(false, b, Some(8), Some(0), "rwm"),
            ],
            group_rules(&[
                rule(true, c, Some(195), None, "rw"),
                rule(false, c, Some(195), Some(1), "w"),
                rule(false, a, Some(1), None, "r"),
                rule(true, b, Some(8), None, "r"),
                rule(true, a, None, Some(7), "m"),
                rule(false, b, None, None, ""),
                rule(true, c, Some(3), Some(3), ""),
            ]),
            vec![
                rule(true, a, Some(1), None, "rw"),
                rule(false, a, None, Some(3), "rwm"),
            ],
        ];
        let mut cases = 0;
        for rules in &lists {
            cases += compare(rules);
        }
        assert!(cases > 5000, "{cases}");
    }

    #[test]
    fn shapes_and_counts() {
        // An empty list denies; allow-all as the last rule is "return 1".
        assert_eq!(program(&[]).len(), 8);
        let mut rules = group_rules(&[]);
        rules.push(DeviceRule {
            allow: true,
            ..DeviceRule::deny_all()
        });
        let p = program(&rules);
        assert_eq!(p.len(), 8);
        assert_eq!(p[6], Insn::alu_k(ALU64_MOV_K, R0, 1));
        // The defaults: prologue 6, two mknod blocks of 6, 8 exact devices of 5, one 136:* of
        // 4, and the deny-all's 2.
        assert_eq!(program(&default_rules()).len(), 6 + 12 + 40 + 4 + 2);
        let gpus: Vec<DeviceRule> = [0, 1, 2]
            .map(|i| DeviceRule::allow_char(195, Some(i), Access::RW))
            .into();
        // Each rw grant: type, 3 access, major, minor, verdict 2.
        assert_eq!(program(&group_rules(&gpus)).len(), 64 + 3 * 8);
    }
}
