//! Fuzz targets of the recipe loader and the ignore-rule parser (`docs/fuzzing.md`); the
//! archive readers are in `fuzz_archive.rs`. Recipes: arbitrary bytes and structure-aware
//! mutations of the example's recipes and of the recipes of `docs/images.md`, through
//! `load_recipe`: nothing panics, loading is deterministic, every error names the recipe
//! file (and a syntax error its line). Ignore rules: generated pattern lines and paths:
//! nothing panics, and a directory `can_prune` says may be skipped has every path below it
//! excluded. Each runs for `FUZZ_SECS`.

use std::path::{Path, PathBuf};

use agent_images::ignore::Ignore;
use agent_images::{load_recipe, RecipeError};
use agent_supervisor_tests::fuzz::{budget, keep_on_panic, regression_files, Edit, Mutator, Tally};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A fresh directory under the temp dir, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("fuzz-images-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create the temp dir");
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example's recipes and every YAML block of `docs/images.md` with a `base:`.
fn recipe_seeds() -> Mutator {
    let mut seeds = Vec::new();
    let dir = root().join("examples/ai-system/images");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the example's images")
        .map(|e| e.expect("an entry").path())
        .collect();
    paths.sort();
    for p in paths {
        seeds.push(std::fs::read(p).expect("read a recipe"));
    }
    let doc = std::fs::read_to_string(root().join("docs/images.md")).expect("read docs/images.md");
    for block in doc.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        if block.contains("base:") {
            seeds.push(block.as_bytes().to_vec());
        }
    }
    assert!(seeds.len() > 3, "too few recipe seeds");
    let words = [
        "base",
        "scratch",
        "host-closure",
        "debootstrap",
        "oci:x",
        "oci-archive:x.tar",
        "docker-archive:x.tar",
        "oci:",
        "steps",
        "copy",
        "run",
        "env",
        "workdir",
        "user",
        "entrypoint",
        "cmd",
        "labels",
        "src",
        "dst",
        "binaries",
        "packages",
        "paths",
        "suite",
        "variant",
        "minbase",
        "buildd",
        "mirror",
        "http://deb.debian.org/debian",
        "include",
        "context",
        "ignore_file",
        "ignore",
        "check_python",
        "/usr/bin/python3",
        "python3",
        "sh -c 'true'",
        ".",
        "..",
        "/",
    ];
    Mutator::new(seeds, &words)
}

/// Loads `bytes` as `dir/recipe.yaml`; checks the properties; returns what happened.
fn recipe_once(dir: &Path, bytes: &[u8]) -> &'static str {
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, bytes).expect("write the recipe");
    let first = load_recipe(&path);
    let again = load_recipe(&path);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "load_recipe is not deterministic"
    );
    match first {
        Ok(_) => "loaded",
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.contains(&path.display().to_string()),
                "the error does not name the recipe: {shown}"
            );
            match e {
                RecipeError::Parse { line, .. } => {
                    assert!(line >= 1, "a recipe syntax error without a line: {shown}");
                    "parse"
                }
                RecipeError::Read { .. } => "read",
                RecipeError::Base { .. } => "base",
                RecipeError::Context { .. } => "context",
                RecipeError::HostOnly { .. } | RecipeError::DebootstrapOnly { .. } => "only",
                RecipeError::Invalid { .. } => "invalid",
            }
        }
    }
}

#[test]
fn fuzz_recipe_bytes() {
    let tmp = Tmp::new("recipe-bytes");
    let tally = Tally::new("recipe bytes");
    bolero::check!()
        .with_test_time(budget())
        .for_each(|bytes: &[u8]| {
            // Not UTF-8 is a read error before any parsing: mostly text, then.
            let text = String::from_utf8_lossy(bytes);
            keep_on_panic("recipe-bytes", text.as_bytes(), || {
                tally.hit(recipe_once(&tmp.0, text.as_bytes()));
            });
        });
}

#[test]
fn fuzz_recipe_mutated() {
    let tmp = Tmp::new("recipe-mutated");
    let m = recipe_seeds();
    let tally = Tally::new("recipe mutated");
    bolero::check!()
        .with_type::<(u16, Vec<Edit>)>()
        .with_test_time(budget())
        .for_each(|(seed, edits)| {
            let bytes = m.apply(*seed, edits);
            keep_on_panic("recipe-mutated", &bytes, || {
                tally.hit(recipe_once(&tmp.0, &bytes));
            });
        });
}

/// Pieces of `.dockerignore` patterns and of paths.
const GLOB: &[&str] = &[
    "*",
    "**",
    "?",
    "[a-z]",
    "[!a]",
    "[^b]",
    "[",
    "]",
    "\\",
    "\\*",
    "!",
    "/",
    "a",
    "b",
    "ab",
    "..",
    ".",
    "#",
    " ",
    "\t",
    "{",
    "}",
    "(",
    ")",
    "|",
    "+",
    "^",
    "$",
    "[[:alpha:]]",
    "[a-]",
    "[]a]",
    "[\\]]",
    "\u{e9}",
    "x.py",
    "**/",
    "/**",
    "a/**/b",
];
const PATH_PARTS: &[&str] = &["a", "b", "ab", "x.py", "*", ".", "..", "[", "\u{e9}", "a b"];

fn join(parts: &[u8], dict: &[&str], sep: &str) -> String {
    parts
        .iter()
        .take(8)
        .map(|i| dict[*i as usize % dict.len()])
        .collect::<Vec<_>>()
        .join(sep)
}

#[test]
fn fuzz_ignore_rules() {
    let tally = Tally::new("ignore");
    bolero::check!()
        .with_type::<(Vec<Vec<u8>>, Vec<Vec<u8>>, String)>()
        .with_test_time(budget())
        .for_each(|(lines, paths, raw)| {
            let mut text: Vec<String> = lines.iter().take(8).map(|l| join(l, GLOB, "")).collect();
            text.push(raw.clone());
            let text = text.join("\n");
            keep_on_panic("ignore", text.as_bytes(), || {
                let mut ig = Ignore::default();
                if let Err(e) = ig.add_lines(".dockerignore", &text) {
                    assert!(
                        e.line >= 1 && e.to_string().contains(".dockerignore"),
                        "{e}"
                    );
                    tally.hit("error");
                    return;
                }
                tally.hit("rules");
                for p in paths.iter().take(8) {
                    let dir = join(p, PATH_PARTS, "/");
                    if dir.is_empty() || !ig.is_excluded(&dir) || !ig.can_prune(&dir) {
                        continue;
                    }
                    tally.hit("pruned");
                    for below in PATH_PARTS.iter().chain(&["a/b", "x/y/z.py"]) {
                        let child = format!("{dir}/{below}");
                        assert!(
                            ig.is_excluded(&child),
                            "{dir} may be pruned, but {child} is not excluded, by:\n{text}"
                        );
                    }
                }
            });
        });
}

/// Inputs that once failed a target, checked in under `tests/fuzz_regressions/`: recipes
/// (`recipe-*`) and ignore files (`ignore-*`).
#[test]
fn regressions() {
    let tmp = Tmp::new("regressions");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for (name, bytes) in regression_files(&dir) {
        if name.contains("/recipe-") {
            recipe_once(&tmp.0, &bytes);
        } else if name.contains("/ignore-") {
            let mut ig = Ignore::default();
            let _ = ig.add_lines(".dockerignore", &String::from_utf8_lossy(&bytes));
        }
    }
}
