//! The recipe format (`docs/images.md`): a base and a list of steps, one layer per step.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

/// One image recipe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `scratch`, `host-closure`, `oci:PATH[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`
    /// or `debootstrap`.
    pub base: String,
    /// For `host-closure`: host binaries copied with their shared-library closure.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// For `host-closure`: Debian packages copied from the host with their closure.
    #[serde(default)]
    pub packages: Vec<String>,
    /// For `host-closure`: host files or directory trees copied as they are (with the
    /// shared-library closure of the ELF files among them).
    #[serde(default)]
    pub paths: Vec<String>,
    /// For `debootstrap`: the Debian suite (default: the host's `VERSION_CODENAME`).
    pub suite: Option<String>,
    /// For `debootstrap`: `minbase` (default), `buildd` or `default` (debootstrap's own).
    pub variant: Option<String>,
    /// For `debootstrap`: the mirror URL (default: the first `deb` URI of the host's apt
    /// sources that serves the suite).
    pub mirror: Option<String>,
    /// For `debootstrap`: more packages to install (`--include`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Build context directory, relative to the recipe (default: the recipe's directory).
    pub context: Option<PathBuf>,
    /// Ignore file in `.dockerignore` syntax, relative to the context (default:
    /// `.dockerignore` when it exists).
    pub ignore_file: Option<PathBuf>,
    /// More ignore patterns, after those of the ignore file.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Compile the `.py` files of every `copy` step at build time (default: true).
    pub check_python: Option<bool>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One build step; each becomes a layer (`copy`, `run`) or a config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Copy { src: String, dst: String },
    Run(Vec<String>),
    Env(IndexMap<String, String>),
    Workdir(String),
    User(String),
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    Labels(IndexMap<String, String>),
}

/// A `copy` step's fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyDe {
    src: String,
    dst: String,
}

/// A step as written: a map with exactly one of these keys.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepDe {
    copy: Option<CopyDe>,
    run: Option<Vec<String>>,
    env: Option<IndexMap<String, String>>,
    workdir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    labels: Option<IndexMap<String, String>>,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StepDe::deserialize(d)?;
        let mut found = Vec::new();
        if let Some(c) = s.copy {
            found.push(Step::Copy {
                src: c.src,
                dst: c.dst,
            });
        }
        found.extend(s.run.map(Step::Run));
        found.extend(s.env.map(Step::Env));
        found.extend(s.workdir.map(Step::Workdir));
        found.extend(s.user.map(Step::User));
        found.extend(s.entrypoint.map(Step::Entrypoint));
        found.extend(s.cmd.map(Step::Cmd));
        found.extend(s.labels.map(Step::Labels));
        if found.len() != 1 {
            return Err(serde::de::Error::custom(format!(
                "a step has exactly one of copy, run, env, workdir, user, entrypoint, cmd, labels (found {})",
                found.len()
            )));
        }
        Ok(found.remove(0))
    }
}

/// A recipe's `base`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    HostClosure,
    /// `oci:PATH[:TAG]`, the path made absolute against the recipe's directory.
    Oci(String),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    Debootstrap,
}

impl Recipe {
    /// The parsed base; relative paths are taken from `recipe_dir`.
    pub fn base_kind(&self, recipe_dir: &Path) -> Option<Base> {
        let b = self.base.as_str();
        let abs = |p: &str| recipe_dir.join(p);
        match b {
            "scratch" => Some(Base::Scratch),
            "host-closure" => Some(Base::HostClosure),
            "debootstrap" => Some(Base::Debootstrap),
            _ => {
                if let Some(r) = b.strip_prefix("oci:").filter(|r| !r.is_empty()) {
                    Some(Base::Oci(abs(r).to_string_lossy().into_owned()))
                } else if let Some(r) = b.strip_prefix("oci-archive:").filter(|r| !r.is_empty()) {
                    Some(Base::OciArchive(abs(r)))
                } else {
                    b.strip_prefix("docker-archive:")
                        .filter(|r| !r.is_empty())
                        .map(|r| Base::DockerArchive(abs(r)))
                }
            }
        }
    }

    /// The build context directory of the recipe at `recipe_path`.
    pub fn context_dir(&self, recipe_path: &Path) -> PathBuf {
        let dir = recipe_path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        self.context
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |c| dir.join(c))
    }
}

/// Why a recipe is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {field}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{path}: base: unknown base {base:?} (use scratch, host-closure, oci:PATH[:TAG], oci-archive:FILE, docker-archive:FILE or debootstrap)")]
    Base { path: PathBuf, base: String },
    #[error("{path}: context: build context {context} is not a directory")]
    Context { path: PathBuf, context: PathBuf },
    #[error("{path}: {field}: only for base host-closure (base is {base:?})")]
    HostOnly {
        path: PathBuf,
        field: &'static str,
        base: String,
    },
    #[error("{path}: {field}: only for base debootstrap (base is {base:?})")]
    DebootstrapOnly {
        path: PathBuf,
        field: &'static str,
        base: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

const BASES: &[&str] = &["scratch", "host-closure", "debootstrap"];
const BASE_PREFIXES: &[&str] = &["oci:", "oci-archive:", "docker-archive:"];

/// Reads and checks a recipe file.
pub fn load_recipe(path: &Path) -> Result<Recipe, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let recipe: Recipe = serde_path_to_error::deserialize(de).map_err(|e| {
        let loc = e.inner().location();
        let mut message = e.inner().to_string();
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        let field = e.path().to_string();
        if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
            message = rest.to_string();
        }
        // The YAML reader gives no place for some errors (a second document): the line
        // of the second document's marker, else the start of the file.
        let (line, column) = loc
            .as_ref()
            .map(|l| (l.line(), l.column()))
            .unwrap_or_else(|| (second_document(&text).unwrap_or(1), 1));
        RecipeError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            field,
            message,
        }
    })?;
    let base_ok = BASES.contains(&recipe.base.as_str())
        || BASE_PREFIXES.iter().any(|p| {
            recipe
                .base
                .strip_prefix(p)
                .is_some_and(|rest| !rest.is_empty())
        });
    if !base_ok {
        return Err(RecipeError::Base {
            path: path.to_path_buf(),
            base: recipe.base.clone(),
        });
    }
    if recipe.base != "host-closure" {
        for (field, empty) in [
            ("binaries", recipe.binaries.is_empty()),
            ("packages", recipe.packages.is_empty()),
            ("paths", recipe.paths.is_empty()),
        ] {
            if !empty {
                return Err(RecipeError::HostOnly {
                    path: path.to_path_buf(),
                    field,
                    base: recipe.base.clone(),
                });
            }
        }
    }
    check_debootstrap_fields(path, &recipe)?;
    let context = recipe.context_dir(path);
    if !context.is_dir() {
        return Err(RecipeError::Context {
            path: path.to_path_buf(),
            context,
        });
    }
    Ok(recipe)
}

/// The line of the marker (`---` or `...`) that ends the first YAML document of `text`, if
/// another follows it.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, l) in text.lines().enumerate() {
        let marker = l.starts_with("---") || l.starts_with("...");
        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
        if marker && content {
            return Some(i + 1);
        }
        if !blank && !l.starts_with('%') && !l.starts_with("---") {
            content = true;
        }
    }
    None
}

/// The `debootstrap` fields: only with that base, and values debootstrap takes as they are
/// (no option-like or blank words).
fn check_debootstrap_fields(path: &Path, recipe: &Recipe) -> Result<(), RecipeError> {
    if recipe.base != "debootstrap" {
        for (field, set) in [
            ("suite", recipe.suite.is_some()),
            ("variant", recipe.variant.is_some()),
            ("mirror", recipe.mirror.is_some()),
            ("include", !recipe.include.is_empty()),
        ] {
            if set {
                return Err(RecipeError::DebootstrapOnly {
                    path: path.to_path_buf(),
                    field,
                    base: recipe.base.clone(),
                });
            }
        }
        return Ok(());
    }
    let invalid = |field: String, message: String| RecipeError::Invalid {
        path: path.to_path_buf(),
        field,
        message,
    };
    // Debian package and suite names: lowercase letters, digits, `+ - .`, first alphanumeric.
    let debian_name = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    };
    if let Some(s) = recipe.suite.as_deref().filter(|s| !debian_name(s)) {
        return Err(invalid(
            "suite".to_string(),
            format!("{s:?} is not a Debian suite name (e.g. bookworm, trixie, stable)"),
        ));
    }
    if let Some(v) = recipe
        .variant
        .as_deref()
        .filter(|v| !crate::debootstrap::VARIANTS.contains(v))
    {
        return Err(invalid(
            "variant".to_string(),
            format!(
                "unknown variant {v:?} (use {})",
                crate::debootstrap::VARIANTS.join(", ")
            ),
        ));
    }
    if let Some(m) = recipe.mirror.as_deref() {
        let scheme = ["http://", "https://", "file:/"]
            .iter()
            .any(|p| m.starts_with(p));
        if !scheme || m.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "mirror".to_string(),
                format!("{m:?} is not an http://, https:// or file:/ URL"),
            ));
        }
    }
    for (i, p) in recipe.include.iter().enumerate() {
        if !debian_name(p) {
            return Err(invalid(
                format!("include[{i}]"),
                format!("{p:?} is not a Debian package name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_parse_and_bad_ones_name_the_place() {
        let dir = std::env::temp_dir().join(format!("recipe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "base: host-closure\nbinaries: [python3]\nsteps:\n  - copy: {src: agents, dst: /app}\n  - env: {A: b}\n").unwrap();
        let r = load_recipe(&good).unwrap();
        assert_eq!(r.steps.len(), 2);
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "base: scratch\nsteps:\n  - copy: {src: a, dts: /b}\n").unwrap();
        let err = load_recipe(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.yaml:3:"), "{err}");
        assert!(err.contains("unknown field `dts`"), "{err}");
        // Found by the fuzz target: the YAML reader gives this error no place (was 0:0).
        let two = dir.join("two.yaml");
        std::fs::write(&two, "# a\nbase: scratch\n---\nbase: scratch\n").unwrap();
        let err = load_recipe(&two).unwrap_err().to_string();
        assert!(err.contains("two.yaml:3:1: "), "{err}");
        let base = dir.join("base.yaml");
        std::fs::write(&base, "base: ubuntu\n").unwrap();
        assert!(load_recipe(&base)
            .unwrap_err()
            .to_string()
            .contains("unknown base \"ubuntu\""));
        let host_only = dir.join("host-only.yaml");
        std::fs::write(&host_only, "base: scratch\npackages: [redis-server]\n").unwrap();
        let err = load_recipe(&host_only).unwrap_err().to_string();
        assert!(
            err.contains("host-only.yaml: packages: only for base host-closure"),
            "{err}"
        );
        let full = dir.join("full.yaml");
        std::fs::write(
            &full,
            "base: oci:base:v1\nignore_file: .ignore\nignore: [x]\ncheck_python: false\n",
        )
        .unwrap();
        let r = load_recipe(&full).unwrap();
        assert_eq!(
            r.base_kind(Path::new("/r")),
            Some(Base::Oci("/r/base:v1".to_string()))
        );
        assert_eq!(r.context_dir(&full), dir);
        let deb = dir.join("deb.yaml");
        std::fs::write(
            &deb,
            "base: debootstrap\nsuite: bookworm\nvariant: buildd\ninclude: [python3, ca-certificates]\n",
        )
        .unwrap();
        let r = load_recipe(&deb).unwrap();
        assert_eq!(r.base_kind(&dir), Some(Base::Debootstrap));
        assert_eq!(r.include, ["python3", "ca-certificates"]);
        for (text, want) in [
            (
                "base: scratch\nsuite: bookworm\n",
                "suite: only for base debootstrap",
            ),
            (
                "base: debootstrap\nvariant: tiny\n",
                "variant: unknown variant \"tiny\"",
            ),
            (
                "base: debootstrap\ninclude: [ok, --foreign]\n",
                "include[1]: \"--foreign\" is not a Debian package name",
            ),
            (
                "base: debootstrap\nmirror: \"ftp://x y\"\n",
                "mirror: \"ftp://x y\" is not an http",
            ),
            (
                "base: debootstrap\nsuite: Bookworm\n",
                "suite: \"Bookworm\" is not a Debian suite name",
            ),
        ] {
            std::fs::write(&deb, text).unwrap();
            let err = load_recipe(&deb).unwrap_err().to_string();
            assert!(err.contains(&format!("deb.yaml: {want}")), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
