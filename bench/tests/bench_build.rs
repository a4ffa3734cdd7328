//! `agent-bench build` runs end to end and prints every row (no timing assertions:
//! the numbers belong in the README, not in a test).

use std::process::Command;

#[test]
fn bench_build_prints_every_row() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent-bench"))
        .args(["build", "--runs", "1"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for row in [
        "cold build (zstd)",
        "no-change rebuild",
        "one agent file changed",
        "cold build (gzip)",
        "floor: tar c | zstd -3",
        "floor: tar c | gzip -6",
        "buildah bud",
        "targets:",
    ] {
        assert!(text.contains(row), "missing {row:?} in:\n{text}");
    }
    // buildah (scripts/install-prereqs.sh) must really run in CI: its row has a time.
    let buildah = text
        .lines()
        .find(|l| l.starts_with("buildah bud (vfs)"))
        .unwrap_or_default();
    if buildah.contains(" s  ") {
        return;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "buildah did not run: {buildah}"
    );
    eprintln!("buildah row without a time: {buildah}");
}
