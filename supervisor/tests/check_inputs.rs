//! `check` on inputs that are wrong in one place: the finding names that place (agent,
//! field, file and line), and only it; the rest of the system is checked as usual.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

mod check_common;
use check_common::*;

/// The base system with `from` replaced by `to` (which must be there).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in the base system");
    BASE.replacen(from, to, 1)
}

/// The lines of `out` that are errors.
fn errors(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_bad_interpreter_of_one_agent_is_that_agents_error_only() {
    let f = Fixture::new("one-interp");
    let sys = base_with(
        "      - name: store\n        command: python3 agents/ok.py",
        "      - name: store\n        command: python9 agents/ok.py",
    );
    f.write("system.yaml", &sys);
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let errs = errors(&out);
    assert_eq!(
        errs.len(),
        1,
        "only db:store's interpreter is wrong:\n{out}"
    );
    assert!(
        errs[0].contains("groups.db.agents[0].command: agent db:store: cannot run Python interpreter \"python9\""),
        "{out}"
    );
    assert!(out.contains("2/3 agents compile"), "{out}");
}

#[test]
fn a_nul_byte_in_one_command_is_that_agents_error_only() {
    let f = Fixture::new("one-nul");
    let sys = base_with(
        "command: python3 agents/ok.py\n        port: 18082",
        "command: \"python3 agents/ok.py\\0\"\n        port: 18082",
    );
    f.write("system.yaml", &sys);
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{out}");
    assert!(errs[0].contains("groups.db.agents[0].command"), "{out}");
    assert!(errs[0].contains("contains a NUL byte"), "{out}");
}

#[test]
fn a_script_that_is_a_directory_is_named_at_the_command() {
    let f = Fixture::new("script-dir");
    std::fs::create_dir_all(f.dir.join("adir")).unwrap();
    f.write(
        "system.yaml",
        &base_with(
            "command: python3 agents/ok.py\n        port: 18082",
            "command: python3 adir\n        port: 18082",
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{out}");
    assert!(
        errs[0].contains("system.yaml:18:18: groups.db.agents[0].command"),
        "{out}"
    );
    assert!(errs[0].contains("cannot be read: Is a directory"), "{out}");
}

#[test]
fn a_workdir_that_is_a_file_or_missing_is_named_at_the_workdir() {
    for (workdir, why) in [
        ("agents/ok.py", "is not a directory"),
        ("/nonexistent-as-test", "does not exist"),
    ] {
        let f = Fixture::new("workdir");
        f.write(
            "system.yaml",
            &base_with(
                "        port: 18082\n",
                &format!("        port: 18082\n        workdir: {workdir}\n"),
            ),
        );
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{workdir}: {out}");
        assert!(
            errs[0].contains("system.yaml:20:18: groups.db.agents[0].workdir"),
            "{out}"
        );
        assert!(errs[0].contains(why), "{workdir}: {out}");
    }
}

#[test]
fn a_script_with_a_nul_byte_is_an_error_of_the_file_without_a_line() {
    let f = Fixture::new("nul-source");
    f.write("agents/nul.py", "x = 1\0\n");
    f.write(
        "system.yaml",
        &base_with(
            "command: python3 agents/ok.py\n        port: 18082",
            "command: python3 agents/nul.py\n        port: 18082",
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{out}");
    let e = errs[0];
    assert!(
        e.contains("agents/nul.py: "),
        "no line for the whole file: {out}"
    );
    assert!(e.contains("null bytes (agent db:store)"), "{out}");
    assert!(out.contains("2/3 agents compile"), "{out}");
}
