//! `parse` never panics on damaged input: deterministic truncations and byte flips of the
//! fixtures, each of which may parse or fail but must return.

use std::path::Path;

use agent_cdi::parse;

const NVIDIA: &str = include_str!("fixtures/nvidia.yaml");
const VENDOR: &str = include_str!("fixtures/vendor.json");

/// A small deterministic generator (xorshift64), so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutations(text: &str, seed: u64, count: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut rng = Rng(seed);
    let interesting = b"{}[]:,-'\"\n #&*!|>%@`\t0";
    let mut out = Vec::new();
    for i in 0..count {
        let mut b = bytes.to_vec();
        match i % 4 {
            0 => b.truncate(rng.below(bytes.len())),
            1 => {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            2 => {
                for _ in 0..4 {
                    let at = rng.below(b.len());
                    b[at] = interesting[rng.below(interesting.len())];
                }
            }
            _ => {
                let from = rng.below(b.len());
                let to = (from + rng.below(64)).min(b.len());
                b.drain(from..to);
            }
        }
        out.push(String::from_utf8_lossy(&b).into_owned());
    }
    out
}

#[test]
fn parse_survives_mutated_fixtures() {
    let mut parsed = 0;
    let mut failed = 0;
    for (file, text, seed) in [
        ("/etc/cdi/nvidia.yaml", NVIDIA, 0x9e37_79b9_7f4a_7c15),
        ("/etc/cdi/vendor.json", VENDOR, 0xd1b5_4a32_d192_ed03),
        ("/etc/cdi/vendor.yaml", VENDOR, 0x2545_f491_4f6c_dd1d),
    ] {
        for text in mutations(text, seed, 300) {
            match parse(Path::new(file), &text) {
                Ok(_) => parsed += 1,
                Err(e) => {
                    assert!(e.to_string().starts_with(file), "{e}");
                    failed += 1;
                }
            }
        }
    }
    assert_eq!(parsed + failed, 900);
    assert!(failed > 100, "most damage is caught: {failed} of 900");
}
