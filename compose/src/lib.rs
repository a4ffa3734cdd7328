//! Docker Compose files (and their Dockerfiles) imported into one agent-supervisor system
//! file and image recipes (`docs/import-export.md`).
//!
//! [`import`] is pure: it reads other files (Dockerfiles, `.env`, ignore files) only
//! through the closure it is given, and never panics on any input. Everything it cannot carry
//! over is a [`Note`] with the Compose file's path and line.

pub mod dockerfile;
mod emit;
pub mod recipe;
mod service;
mod service_keys;
mod system;
pub mod values;
mod yaml;

use std::path::{Path, PathBuf};

/// Which host a compose file's services (or some of them) go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostArg {
    /// `--host NAME`: paired with the compose files in order.
    Name(String),
    /// `--host NAME=svc1,svc2`: these services (of any file) go to NAME.
    Services(String, Vec<String>),
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub hosts: Vec<HostArg>,
    /// `--join GROUP=svc1,svc2`: these services become one group.
    pub joins: Vec<(String, Vec<String>)>,
    /// The system file to be written: paths in it are made relative to its directory.
    pub output: PathBuf,
    /// Variables for `${VAR}` interpolation (the environment); they win over `.env`.
    pub env: Vec<(String, String)>,
}

/// Something that was not carried over, at a place of a Compose file or Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: PathBuf,
    /// 1-based; 0 when it is about the file as a whole.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// The result: the system file's text, the recipe files beside it, and the notes.
#[derive(Debug, Clone)]
pub struct Imported {
    pub system: String,
    /// Files to write, relative to the system file's directory (image recipes).
    pub files: Vec<(PathBuf, String)>,
    pub notes: Vec<Note>,
}

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}:{column}: YAML syntax error: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Shape { file: PathBuf, message: String },
    #[error("no compose files given")]
    NoFiles,
    #[error("--host: {0}")]
    Hosts(String),
    #[error("--join: {0}")]
    Join(String),
}

/// Imports the compose files (`(path, text)`, one per host when several `--host NAME` are
/// given). `read` returns the text of another file (a Dockerfile, `.env`, an ignore file) or
/// `None` when it is missing.
pub fn import(
    files: &[(PathBuf, String)],
    read: &dyn Fn(&Path) -> Option<String>,
    opts: &Options,
) -> Result<Imported, Error> {
    system::import(files, read, opts)
}
