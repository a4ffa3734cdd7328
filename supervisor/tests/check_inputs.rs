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

#[test]
fn yaml_null_in_a_text_field_is_an_error_not_the_text_null() {
    for (from, to, field) in [
        (
            "address: 10.0.0.1",
            "address: null",
            "system.yaml:2:17: hosts.h1.address",
        ),
        (
            "- name: store",
            "- name: ~",
            "system.yaml:17:15: groups.db.agents[0].name",
        ),
        (
            "depends_on: [web]",
            "depends_on: [null]",
            "system.yaml:15:18: groups.db.depends_on[0]",
        ),
    ] {
        let f = Fixture::new("null");
        f.write("system.yaml", &base_with(from, to));
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{to}: {out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{to}: {out}");
        assert!(errs[0].contains(field), "{to}: {out}");
        assert!(
            errs[0].contains("expected a string, got null"),
            "{to}: {out}"
        );
        assert!(
            !out.contains("(unreadable)"),
            "the summary shows ? instead: {out}"
        );
    }
    // Quoted, it is the text.
    let f = Fixture::new("null-quoted");
    f.write(
        "system.yaml",
        &base_with("port: 18082", "port: 18082\n        env: {X: \"null\"}"),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_unreadable_list_item_is_reported_once_without_its_stand_in() {
    let f = Fixture::new("stand-in");
    f.write(
        "system.yaml",
        &base_with("depends_on: [web]", "depends_on: [[web]]"),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    let errs = errors(&out);
    assert_eq!(errs.len(), 1, "{out}");
    assert!(
        errs[0].contains("groups.db.depends_on[0]: expected a string, got a list"),
        "{out}"
    );
    assert!(!errs[0].contains("(unreadable)"), "{out}");
}

#[test]
fn a_settings_mapping_of_the_wrong_type_says_mapping_not_a_rust_type() {
    let f = Fixture::new("settings-type");
    f.write(
        "system.yaml",
        &base_with(
            "    depends_on: [web]\n",
            "    depends_on: [web]\n    resources: 5\n",
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("groups.db.resources: expected a mapping, got 5"),
        "{out}"
    );
    assert!(!out.contains("struct"), "{out}");
    // `null` and empty are both "nothing here": the defaults.
    for empty in ["null", "~", ""] {
        let f = Fixture::new("settings-null");
        let sys = base_with(
            "    depends_on: [web]\n",
            &format!("    depends_on: [web]\n    resources: {empty}\n"),
        );
        f.write("system.yaml", &sys);
        let (code, out) = f.check(&[]);
        assert_eq!(code, 0, "resources: {empty}: {out}");
    }
}

#[test]
fn env_file_errors_quote_no_line_and_stop_after_ten() {
    let f = Fixture::new("env-file-many");
    let secret: String = (0..25).map(|i| format!("s3cret-token-{i}\n")).collect();
    f.write("app.env", &format!("A=1\n{secret}"));
    f.write(
        "system.yaml",
        &base_with(
            "    depends_on: [web]\n",
            "    depends_on: [web]\n    env_file: app.env\n",
        ),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.contains("s3cret"),
        "a line of an env file may be a secret:\n{out}"
    );
    let errs = errors(&out);
    assert_eq!(errs.len(), 11, "{out}");
    assert!(
        errs[0]
            .contains("app.env:2:1: groups.db.env_file: expected KEY=VALUE: this line has no `=`"),
        "{out}"
    );
    assert!(
        errs[10]
            .contains("app.env:12:1: groups.db.env_file: this and 14 more bad line(s) not shown"),
        "{out}"
    );
}

#[test]
fn an_env_file_that_is_a_directory_or_a_device_says_so() {
    for (path, why) in [
        ("adir", "is a directory, not a regular file"),
        ("/dev/zero", "is a device, not a regular file"),
        ("none.env", "does not exist"),
    ] {
        let f = Fixture::new("env-file-kind");
        std::fs::create_dir_all(f.dir.join("adir")).unwrap();
        f.write(
            "system.yaml",
            &base_with(
                "    depends_on: [web]\n",
                &format!("    depends_on: [web]\n    env_file: {path}\n"),
            ),
        );
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{path}: {out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{path}: {out}");
        assert!(
            errs[0].contains("system.yaml:16:15: groups.db.env_file: env_file"),
            "{out}"
        );
        assert!(errs[0].contains(why), "{path}: {out}");
    }
}

#[test]
fn names_one_in_etc_hosts_or_the_environment_are_a_clash() {
    for (from, to, at, what) in [
        ("- name: back", "- name: Front", "system.yaml:10:15: groups.web.agents[1].name", "agent web:Front clashes with agent web:front (at groups.web.agents[0].name): names that differ only in case or in - and _ are one name in /etc/hosts and in FRONT_ADDR"),
        ("- name: store", "- name: web", "system.yaml:17:15: groups.db.agents[0].name", "agent db:web clashes with group web (at groups.web): /etc/hosts would give the name web to both"),
        ("- name: store", "- name: H1", "system.yaml:17:15: groups.db.agents[0].name", "agent db:H1 clashes with host h1 (at hosts.h1)"),
        ("  db:\n", "  H1:\n", "system.yaml:14:5: groups.H1", "group H1 clashes with host h1 (at hosts.h1)"),
    ] {
        let f = Fixture::new("clash");
        f.write("system.yaml", &base_with(from, to));
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{to}: {out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{to}: {out}");
        assert!(errs[0].contains(at), "{to}: {out}");
        assert!(errs[0].contains(what), "{to}: {out}");
    }
    // An agent named like its own group is one address: no clash.
    let f = Fixture::new("clash-own-group");
    f.write("system.yaml", &base_with("- name: store", "- name: db"));
    let (code, out) = f.check(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn ranges_and_values_are_the_fields_own() {
    for (to, field, what) in [
        (
            "resources: {cpu_weight: 70000}",
            "groups.db.resources.cpu_weight",
            "expected a CPU weight 1-10000, got 70000",
        ),
        (
            "resources: {pids: -1}",
            "groups.db.resources.pids",
            "expected a whole number 1 or more, got -1",
        ),
        (
            "resources: {cpus: 5000}",
            "groups.db.resources.cpus",
            "expected a number of CPUs above 0 and at most 4096, got 5000",
        ),
    ] {
        let f = Fixture::new("ranges");
        f.write(
            "system.yaml",
            &base_with(
                "    depends_on: [web]\n",
                &format!("    depends_on: [web]\n    {to}\n"),
            ),
        );
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{to}: {out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{to}: {out}");
        assert!(errs[0].contains("system.yaml:16:"), "{to}: {out}");
        assert!(errs[0].contains(&format!("{field}: {what}")), "{to}: {out}");
    }
    // A whole number too large for any integer is echoed as written, not as a float.
    let f = Fixture::new("huge-int");
    f.write(
        "system.yaml",
        &base_with("port: 18082", "port: 99999999999999999999999999"),
    );
    let (_, out) = f.check(&[]);
    assert!(
        out.contains(
            "groups.db.agents[0].port: expected a port 1-65535, got 99999999999999999999999999\n"
        ),
        "{out}"
    );
}

#[test]
fn a_bad_name_says_what_is_wrong_with_it() {
    let long = "a".repeat(70);
    for (to, what) in [
        (
            format!("- name: {long}"),
            format!(
                "agent name \"{}\"… is 70 characters long; at most 63",
                &long[..40]
            ),
        ),
        (
            "- name: -x".to_string(),
            "agent name \"-x\" may not start with -".to_string(),
        ),
        (
            "- name: a.b".to_string(),
            "agent name \"a.b\" may use only letters, digits, - and _".to_string(),
        ),
    ] {
        let f = Fixture::new("bad-name");
        f.write("system.yaml", &base_with("- name: store", &to));
        let (code, out) = f.check(&[]);
        assert_eq!(code, 1, "{to}: {out}");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{to}: {out}");
        assert!(
            errs[0].contains(&format!("groups.db.agents[0].name: {what}")),
            "{to}: {out}"
        );
    }
}

#[test]
fn a_control_character_in_a_key_is_escaped_in_the_report() {
    let f = Fixture::new("nul-key");
    f.write(
        "system.yaml",
        &base_with("port: 18082", "port: 18082\n        env: {\"A\\u0000\": x}"),
    );
    let (code, out) = f.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains('\0'), "a raw NUL reached the report: {out:?}");
    assert!(out.contains("groups.db.agents[0].env.A\\u{0}: environment variable name \"A\\0\" contains a NUL byte"), "{out}");
}

#[test]
fn a_reader_that_goes_away_ends_check_quietly_not_with_a_panic() {
    use std::process::{Command, Stdio};
    let f = Fixture::new("broken-pipe");
    f.write("system.yaml", BASE);
    for json in [false, true] {
        let mut cmd = Command::new(BIN);
        cmd.arg("check").arg(f.dir.join("system.yaml"));
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before check writes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "json={json}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "json={json}: {stderr}");
    }
}

#[test]
fn the_disk_finding_points_at_min_free_disk_and_an_empty_state_dir_is_one_error() {
    let f = Fixture::new("disk");
    f.write(
        "system.yaml",
        &format!("daemon:\n  min_free_disk: 1000000T\n{BASE}"),
    );
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 1, "{out}");
    let disk: Vec<&str> = errors(&out)
        .into_iter()
        .filter(|l| l.contains("free on"))
        .collect();
    assert_eq!(disk.len(), 1, "{out}");
    assert!(
        disk[0].contains("system.yaml:2:18: daemon.min_free_disk: only "),
        "{out}"
    );

    let f = Fixture::new("empty-state-dir");
    f.write("system.yaml", &format!("daemon:\n  state_dir: ''\n{BASE}"));
    let (code, out) = f.check(&["--host", "h1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("system.yaml:2:14: daemon.state_dir: state_dir is empty"),
        "{out}"
    );
    assert!(
        !out.contains("free disk"),
        "no second finding about the empty path: {out}"
    );
}
