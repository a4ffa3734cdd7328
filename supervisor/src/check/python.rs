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
    /// The interpreter could not be run at all.
    NoInterpreter(String),
}

/// Python run by the interpreter: reads paths (one per line) on stdin, writes one JSON
/// result per line. `compile()` only; nothing is written next to the scripts.
const CHECKER: &str = r#"
import json, sys
for raw in sys.stdin:
    p = raw.rstrip("\n")
    try:
        with open(p, "rb") as f:
            src = f.read()
    except FileNotFoundError:
        print(json.dumps({"path": p, "missing": True})); continue
    except OSError as e:
        print(json.dumps({"path": p, "error": "OSError", "line": 0, "msg": str(e)})); continue
    try:
        compile(src, p, "exec", dont_inherit=True)
        print(json.dumps({"path": p, "ok": True}))
    except (SyntaxError, ValueError) as e:
        print(json.dumps({"path": p, "error": type(e).__name__,
                          "line": getattr(e, "lineno", 0) or 0,
                          "msg": getattr(e, "msg", str(e))}))
"#;

/// Compiles every script, grouping them by interpreter so each interpreter runs once.
pub fn compile_all(scripts: &[Script]) -> BTreeMap<PathBuf, Compiled> {
    let mut by_interp: BTreeMap<&str, Vec<&Script>> = BTreeMap::new();
    for s in scripts {
        by_interp.entry(s.interpreter.as_str()).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (interp, list) in by_interp {
        let mut paths: Vec<&PathBuf> = list.iter().map(|s| &s.path).collect();
        paths.sort();
        paths.dedup();
        match run_interpreter(interp, &paths) {
            Ok(results) => out.extend(results),
            Err(why) => {
                for p in paths {
                    out.insert(p.clone(), Compiled::NoInterpreter(why.clone()));
                }
            }
        }
    }
    out
}

fn run_interpreter(
    interp: &str,
    paths: &[&PathBuf],
) -> Result<BTreeMap<PathBuf, Compiled>, String> {
    let mut child = Command::new(interp)
        .args(["-I", "-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run Python interpreter {interp:?}: {e}"))?;
    let mut input = String::new();
    for p in paths {
        input.push_str(&p.to_string_lossy());
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
        return Err(format!(
            "Python interpreter {interp:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad checker output {line:?}: {e}"))?;
        let path = PathBuf::from(v["path"].as_str().unwrap_or_default());
        let result = if v["ok"].as_bool() == Some(true) {
            Compiled::Ok
        } else if v["missing"].as_bool() == Some(true) {
            Compiled::Missing
        } else {
            Compiled::SyntaxError {
                line: v["line"].as_u64().unwrap_or(0) as usize,
                kind: v["error"].as_str().unwrap_or("SyntaxError").to_string(),
                message: v["msg"].as_str().unwrap_or_default().to_string(),
            }
        };
        out.insert(path, result);
    }
    Ok(out)
}
