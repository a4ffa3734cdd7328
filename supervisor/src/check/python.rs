//! Syntax check of agents' Python scripts: one interpreter process compiles them all.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use agent_config::scripts::Script;

/// Result of compiling one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    Ok,
    /// `line: SyntaxError: message`
    SyntaxError {
        line: usize,
        kind: String,
        message: String,
    },
    Missing,
    /// The path is there but cannot be read as a file (a directory, no permission).
    Unreadable(String),
    /// The interpreter could not be run at all.
    NoInterpreter(String),
}

/// Python run by the interpreter: reads `INDEX HEX-OF-PATH` lines on stdin (any byte of a
/// path survives, a newline included) and writes one JSON result per line, with the index.
/// `compile()` only; nothing is written next to the scripts. Every exception of one script
/// is that script's result, so one odd file cannot fail the others.
const CHECKER: &str = r#"
import json, os, sys
for raw in sys.stdin:
    i, _, h = raw.strip().partition(" ")
    r = {"i": int(i)}
    try:
        p = bytes.fromhex(h)
        with open(p, "rb") as f:
            src = f.read()
    except FileNotFoundError:
        r["missing"] = True
    except Exception as e:
        r["unreadable"] = getattr(e, "strerror", None) or str(e)
    else:
        try:
            compile(src, os.fsdecode(p), "exec", dont_inherit=True)
            r["ok"] = True
        except Exception as e:
            r.update({"error": type(e).__name__, "line": getattr(e, "lineno", 0) or 0,
                      "msg": getattr(e, "msg", None) or str(e)})
    print(json.dumps(r))
"#;

/// Compiles every script, grouping them by interpreter so each interpreter runs once and
/// each (interpreter, path) is compiled once. One result per script, in order.
pub fn compile_all(scripts: &[Script]) -> Vec<Compiled> {
    let mut by_interp: BTreeMap<&str, Vec<&PathBuf>> = BTreeMap::new();
    for s in scripts {
        by_interp
            .entry(s.interpreter.as_str())
            .or_default()
            .push(&s.path);
    }
    let mut results: BTreeMap<(&str, &PathBuf), Compiled> = BTreeMap::new();
    for (interp, mut paths) in by_interp {
        paths.sort();
        paths.dedup();
        match run_interpreter(interp, &paths) {
            Ok(list) => {
                for (p, c) in paths.iter().zip(list) {
                    results.insert((interp, p), c);
                }
            }
            Err(why) => {
                for p in paths {
                    results.insert((interp, p), Compiled::NoInterpreter(why.clone()));
                }
            }
        }
    }
    scripts
        .iter()
        .map(|s| {
            results
                .get(&(s.interpreter.as_str(), &s.path))
                .cloned()
                .unwrap_or_else(|| Compiled::NoInterpreter("the script was not checked".into()))
        })
        .collect()
}

/// One result per path, in order.
fn run_interpreter(interp: &str, paths: &[&PathBuf]) -> Result<Vec<Compiled>, String> {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut child = Command::new(interp)
        .args(["-I", "-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run Python interpreter {interp:?}: {e}"))?;
    let mut input = String::new();
    for (i, p) in paths.iter().enumerate() {
        let _ = write!(input, "{i} ");
        for b in p.as_os_str().as_bytes() {
            let _ = write!(input, "{b:02x}");
        }
        input.push('\n');
    }
    let mut stdin = child.stdin.take().ok_or("interpreter stdin is not piped")?;
    // Write from a thread so a large output cannot deadlock against our input.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("Python interpreter {interp:?} failed: {e}"))?;
    let _ = writer.join();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim().lines().last().unwrap_or_default().to_string();
        return Err(format!(
            "Python interpreter {interp:?} exited with {}: {}",
            output.status,
            clip(&last, 300)
        ));
    }
    let mut out: Vec<Option<Compiled>> = vec![None; paths.len()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("Python interpreter {interp:?}: bad checker output: {e}"))?;
        let Some(slot) = v["i"]
            .as_u64()
            .and_then(|i| out.get_mut(usize::try_from(i).ok()?))
        else {
            continue;
        };
        *slot = Some(if v["ok"].as_bool() == Some(true) {
            Compiled::Ok
        } else if v["missing"].as_bool() == Some(true) {
            Compiled::Missing
        } else if let Some(why) = v["unreadable"].as_str() {
            Compiled::Unreadable(why.to_string())
        } else {
            Compiled::SyntaxError {
                line: v["line"].as_u64().unwrap_or(0) as usize,
                kind: v["error"].as_str().unwrap_or("SyntaxError").to_string(),
                message: v["msg"].as_str().unwrap_or_default().to_string(),
            }
        });
    }
    Ok(out
        .into_iter()
        .map(|c| {
            c.unwrap_or_else(|| {
                Compiled::NoInterpreter(format!("Python interpreter {interp:?} gave no result"))
            })
        })
        .collect())
}

/// At most `max` characters of `s`, with `…` where it was cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
