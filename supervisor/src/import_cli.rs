//! `agent-supervisor import compose FILE... [--host NAME ...] [--join G=a,b] [-o FILE]`:
//! Compose files to one system file and image recipes (`docs/import-export.md`).

use std::path::{Path, PathBuf};

use agent_compose::{HostArg, Options};

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--join {0:?}: expected GROUP=svc1,svc2")]
    JoinSyntax(String),
    #[error("{output}: exists; pass --force to replace it")]
    Exists { output: PathBuf },
    #[error(transparent)]
    Import(#[from] agent_compose::Error),
}

/// What `import compose` is asked.
pub struct ComposeArgs {
    pub files: Vec<PathBuf>,
    pub hosts: Vec<String>,
    pub joins: Vec<String>,
    pub output: PathBuf,
    pub force: bool,
}

/// The paths as given when all are relative (so notes name them as the user wrote them),
/// else all made absolute: the import relates them lexically.
fn frame(paths: &[&Path]) -> Vec<PathBuf> {
    if paths.iter().all(|p| p.is_relative()) {
        paths.iter().map(|p| p.to_path_buf()).collect()
    } else {
        paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
            .collect()
    }
}

/// Runs the import: writes the system file and its recipes, prints the notes to stderr, and
/// returns the summary line.
pub fn compose(a: &ComposeArgs) -> Result<String, ImportError> {
    let mut all: Vec<&Path> = a.files.iter().map(PathBuf::as_path).collect();
    all.push(&a.output);
    let framed = frame(&all);
    let mut files = Vec::new();
    for (f, abs) in a.files.iter().zip(&framed) {
        let text = std::fs::read_to_string(f).map_err(|source| ImportError::Read {
            path: f.clone(),
            source,
        })?;
        files.push((abs.clone(), text));
    }
    let hosts = a
        .hosts
        .iter()
        .map(|h| match h.split_once('=') {
            Some((n, svcs)) => HostArg::Services(
                n.to_string(),
                svcs.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            None => HostArg::Name(h.clone()),
        })
        .collect();
    let mut joins = Vec::new();
    for j in &a.joins {
        let (g, svcs) = j
            .split_once('=')
            .ok_or_else(|| ImportError::JoinSyntax(j.clone()))?;
        joins.push((
            g.to_string(),
            svcs.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ));
    }
    let output = framed.last().cloned().unwrap_or_else(|| a.output.clone());
    if output.exists() && !a.force {
        return Err(ImportError::Exists {
            output: a.output.clone(),
        });
    }
    let opts = Options {
        hosts,
        joins,
        output: output.clone(),
        env: std::env::vars().collect(),
    };
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let imported = agent_compose::import(&files, &read, &opts)?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write = |p: &Path, text: &str| -> Result<(), ImportError> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ImportError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(p, text).map_err(|source| ImportError::Write {
            path: p.to_path_buf(),
            source,
        })
    };
    for (rel, text) in &imported.files {
        write(&dir.join(rel), text)?;
    }
    write(&output, &imported.system)?;
    for n in &imported.notes {
        eprintln!("{n}");
    }
    Ok(format!(
        "wrote {} and {} recipe(s); {} thing(s) not carried over (listed above and at the top of the file)\n",
        a.output.display(),
        imported.files.len(),
        imported.notes.len()
    ))
}
