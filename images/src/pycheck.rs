//! Build-time syntax check of the Python sources a `copy` step puts into an image.
//!
//! One `python3 -I -S -W ignore` process per build `compile()`s every `.py` file (nothing is written next
//! to them); a file that does not compile fails the build with `path:line`. The process is
//! started at the build's first rebuilt layer, so the interpreter's start-up (a `pyenv` shim
//! alone costs tens of milliseconds) overlaps the archiving of that layer, and it serves every
//! `copy` step of the build.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// Reads batches of paths (one per line, a batch ends with an empty line); for each batch
/// prints one line per failing file, `index<TAB>line<TAB>ErrorType: message`, then `-`.
/// The whole batch is read before anything is printed, so neither side can block the other.
const CHECKER: &str = r#"
import sys
def check(paths):
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as f:
                src = f.read()
            compile(src, p, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            msg = (getattr(e, "msg", None) or str(e)).replace("\n", " ")
            print("%d\t%d\t%s: %s" % (i, getattr(e, "lineno", 0) or 0, type(e).__name__, msg))
        except OSError as e:
            print("%d\t0\tOSError: %s" % (i, e))
    print("-", flush=True)
batch = []
while True:
    raw = sys.stdin.readline()
    if not raw:
        break
    p = raw.rstrip("\n")
    if p:
        batch.append(p)
    else:
        check(batch)
        batch = []
"#;

/// A Python source that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyError {
    /// Context-relative path.
    pub path: String,
    pub line: usize,
    /// `SyntaxError: invalid syntax`
    pub message: String,
}

/// A running checker process (killed when dropped).
pub struct Checker {
    python: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Drains stderr (so the interpreter never blocks on it); its last 4 KiB.
    stderr: Option<JoinHandle<String>>,
}

impl Checker {
    /// Starts `python`; `Err` says why it cannot run.
    pub fn start(python: &str) -> Result<Checker, CheckerError> {
        let mut child = Command::new(python)
            // -W ignore: compile()'s warnings (e.g. invalid escapes) are not errors.
            .args(["-I", "-S", "-W", "ignore", "-c", CHECKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CheckerError::Spawn {
                python: python.to_string(),
                message: e.to_string(),
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| CheckerError::Spawn {
            python: python.to_string(),
            message: "its stdout is not piped".to_string(),
        })?;
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = e.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(4096);
                    tail.drain(..excess);
                }
                String::from_utf8_lossy(&tail).into_owned()
            })
        });
        Ok(Checker {
            python: python.to_string(),
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr,
        })
    }

    /// Compiles `files` ((context-relative path, host path)).
    ///
    /// `Err` when the interpreter does not answer (it exited; the message has its stderr);
    /// `Ok(errors)` otherwise.
    pub fn check(&mut self, files: &[(String, PathBuf)]) -> Result<Vec<PyError>, CheckerError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::new();
        for (_, host) in files {
            let b = host.as_os_str().as_encoded_bytes();
            if b.contains(&b'\n') {
                return Err(CheckerError::Path { path: host.clone() });
            }
            input.extend_from_slice(b);
            input.push(b'\n');
        }
        input.push(b'\n');
        let sent = self
            .stdin
            .as_mut()
            .ok_or_else(|| "interpreter stdin is closed".to_string())
            .and_then(|s| {
                s.write_all(&input)
                    .and_then(|()| s.flush())
                    .map_err(|e| e.to_string())
            });
        let mut errors = Vec::new();
        let mut line = String::new();
        let answered = sent.and_then(|()| loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) => break Err("no answer".to_string()),
                Ok(_) if line.trim_end() == "-" => break Ok(()),
                Ok(_) => errors.extend(parse_error(line.trim_end_matches('\n'), files)),
                Err(e) => break Err(e.to_string()),
            }
        });
        match answered {
            Ok(()) => Ok(errors),
            Err(why) => Err(self.failure(&why)),
        }
    }

    /// Why the interpreter stopped answering: its exit status and stderr.
    fn failure(&mut self, why: &str) -> CheckerError {
        self.stdin = None;
        let status = self
            .child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        CheckerError::Failed {
            python: self.python.clone(),
            why: why.to_string(),
            status,
            stderr: stderr.trim().to_string(),
        }
    }
}

/// The checker could not run or stopped answering (the build goes on, with a warning).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckerError {
    #[error("cannot run Python interpreter {python:?}: {message}")]
    Spawn { python: String, message: String },
    #[error("{}: a newline in the path", path.display())]
    Path { path: PathBuf },
    #[error("Python interpreter {python:?} failed ({why}), exited with {status}: {stderr}")]
    Failed {
        python: String,
        why: String,
        status: String,
        stderr: String,
    },
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stdin = None;
        // Not needed any more; it may still be starting up.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The stderr thread ends at end of file; it is not waited for.
    }
}

fn parse_error(line: &str, files: &[(String, PathBuf)]) -> Option<PyError> {
    let mut parts = line.splitn(3, '\t');
    let (i, l, msg) = (parts.next()?, parts.next()?, parts.next()?);
    let (path, _) = i.parse::<usize>().ok().and_then(|i| files.get(i))?;
    Some(PyError {
        path: path.clone(),
        line: l.parse().unwrap_or(0),
        message: msg.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_checker_answers_several_batches() {
        let dir = std::env::temp_dir().join(format!("pycheck-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.py");
        let bad = dir.join("bad.py");
        std::fs::write(&good, "x = 1\n").expect("write good.py");
        std::fs::write(&bad, "x = 1\ndef f(:\n").expect("write bad.py");
        let mut c = match Checker::start("python3") {
            Ok(c) => c,
            Err(why) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {why}");
                return;
            }
            Err(why) => panic!("{why}"),
        };
        let files = vec![
            ("a/good.py".to_string(), good.clone()),
            ("a/bad.py".to_string(), bad.clone()),
        ];
        let errors = c.check(&files).expect("first batch");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "a/bad.py");
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.starts_with("SyntaxError"), "{errors:?}");
        let again = c
            .check(&[("good.py".to_string(), good)])
            .expect("second batch");
        assert!(again.is_empty(), "{again:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
