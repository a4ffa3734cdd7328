//! `agent-supervisor build` shows its progress: one plain line per step on stderr when stderr
//! is not a terminal (image, step, built/cached, bytes, time), progress bars on a terminal.
//! (`script` is util-linux, already in `scripts/install-prereqs.sh`.)

use std::process::{Command, Output};

use agent_supervisor_tests::fixture::{text, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

const RECIPE: &str = "base: host-closure\nbinaries: [sh]\ncontext: ..\nsteps:\n  - copy: {src: app, dst: /app}\n  - env: {MODE: test}\n  - workdir: /app\n";

const MAIN_PY: &str = "print('hello from the image')\n";

fn fixture(name: &str) -> Fixture {
    let f = Fixture::new(
        BIN,
        name,
        "bcli",
        "  boxed:\n    host: h1\n    image: tiny\n    agents:\n      - name: a\n        command: [/bin/sh, -c, 'true']\n",
    );
    let path = f.dir.join("system.yaml");
    let s = std::fs::read_to_string(&path).expect("read system.yaml");
    std::fs::write(
        &path,
        format!("images:\n  tiny: {{recipe: images/tiny.yaml}}\n{s}"),
    )
    .expect("write system.yaml");
    f.file("images/tiny.yaml", RECIPE);
    f.file("app/main.py", MAIN_PY);
    f
}

fn build(f: &Fixture) -> Output {
    Command::new(BIN)
        .arg("build")
        .arg(f.dir.join("system.yaml"))
        .args(["--host", "h1", "--compression", "zstd"])
        .output()
        .expect("run agent-supervisor build")
}

/// The step lines of stderr: `tiny [P/4] step I WHAT: OUTCOME, T s`, as (index, outcome).
fn steps(out: &Output) -> Vec<(usize, String)> {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b'), "no terminal codes on a pipe:\n{err}");
    err.lines()
        .filter_map(|l| l.strip_prefix("tiny ["))
        .map(|l| {
            let (pos, rest) = l.split_once("/4] step ").expect("[P/4] step I");
            let (n, rest) = rest.split_once(' ').expect("step I WHAT");
            let n: usize = n.parse().expect("a step number");
            assert_eq!(pos.parse::<usize>().ok(), Some(n + 1), "{l}");
            let (_, outcome) = rest.rsplit_once(": ").expect("what: outcome");
            let (outcome, time) = outcome.rsplit_once(", ").expect("outcome, time");
            let secs = time.strip_suffix(" s").expect("a time in seconds");
            assert!(secs.parse::<f64>().is_ok(), "a time: {l}");
            (n, outcome.to_string())
        })
        .collect()
}

#[test]
fn plain_progress_has_one_line_per_step_and_says_cached() {
    let f = fixture("build-cli-plain");
    let out = build(&f);
    assert!(out.status.success(), "{}", text(&out));
    let first = steps(&out);
    let indexes: Vec<usize> = first.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1, 2, 3], "one line per step:\n{}", text(&out));
    assert!(
        first[0].1.starts_with("built, ") && !first[0].1.starts_with("built, 0 bytes"),
        "{first:?}"
    );
    // The copy step archived exactly main.py.
    assert_eq!(first[1].1, format!("built, {} bytes", MAIN_PY.len()));
    assert_eq!(
        (first[2].1.as_str(), first[3].1.as_str()),
        ("config", "config")
    );
    assert!(text(&out).contains("image tiny: sha256:"), "{}", text(&out));

    let again = build(&f);
    assert!(again.status.success(), "{}", text(&again));
    let second = steps(&again);
    let cached: Vec<&str> = second.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(
        cached,
        ["cached, 0 bytes", "cached, 0 bytes", "config", "config"],
        "{}",
        text(&again)
    );

    // One file changed: only the copy step is rebuilt.
    f.file("app/main.py", "print('changed')\n");
    let third = build(&f);
    assert!(third.status.success(), "{}", text(&third));
    let outcomes: Vec<String> = steps(&third).into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes[0], "cached, 0 bytes");
    assert_eq!(
        outcomes[1],
        format!("built, {} bytes", "print('changed')\n".len())
    );
}

#[test]
fn a_terminal_gets_progress_bars() {
    // `script` (util-linux) runs the build on a pseudo-terminal.
    let script = Command::new("script").arg("--version").output();
    if script.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script (util-linux) is needed"
        );
        eprintln!("skipped: script (util-linux) is not installed");
        return;
    }
    let f = fixture("build-cli-tty");
    let cmd = format!(
        "{BIN} build {} --host h1 --compression zstd",
        f.dir.join("system.yaml").display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("run script");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // The bar's template: `[====>  ] 4/4 steps`, drawn with terminal codes.
    assert!(t.contains("4/4 steps"), "{t}");
    assert!(t.contains('\x1b'), "drawn with terminal codes:\n{t}");
    assert!(
        t.contains("tiny [2/4] step 1 copy app -> /app: built"),
        "{t}"
    );
}
