//! The builder: a recipe to an OCI image in the store, one layer per file system step
//! (the base closure, each `copy`), each layer cached under the digest of its inputs.
//!
//! A step's key is the digest of: the parent layer's digest (or the base's identity), the step
//! as written, the digest of everything it copies (paths, modes, link targets, file contents;
//! for `host-closure`, host file metadata), the compression and the entry mtime. An unchanged
//! step is looked up in `cache/` and its layer reused without tarring or compressing; a changed
//! step, and every layer step after it, is rebuilt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::closure::{self, ClosureError};
use crate::debootstrap::{self, DebootstrapError};
use crate::digest::{Digest, KeyHasher};
use crate::ignore::{Ignore, IgnoreError};
use crate::layer::{self, Compression, LayerError, Tree};
use crate::oci::{
    host_architecture, Descriptor, History, ImageConfig, Manifest, RootFs, MEDIA_CONFIG,
    MEDIA_MANIFEST,
};
use crate::pycheck::{Checker, CheckerError, PyError};
use crate::recipe::{load_recipe, Base, Recipe, RecipeError, Step};
use crate::store::{check_name, parse_json, Store, StoreError};
use crate::walk::{self, WalkError, WalkStats};

#[path = "build_events.rs"]
mod events;
#[path = "build_run.rs"]
mod run_step;
pub use events::{BuildEvent, BuildObserver};
pub use run_step::{RunError, RunLayer, RunRequest, StepRunner};

/// How to build.
#[derive(Clone)]
pub struct BuildOptions {
    /// Rebuild every layer (the cache is still refreshed).
    pub no_cache: bool,
    pub compression: Compression,
    /// Compression level (gzip 0-9, default 6; zstd 1-19, default 3).
    pub level: Option<i32>,
    /// The mtime of every entry of every layer (`SOURCE_DATE_EPOCH`; default 0).
    pub source_date_epoch: u64,
    /// Interpreter for the build-time syntax check of copied `.py` files.
    pub python: String,
    /// Runs `run` steps in a sandbox (the launcher of `agent-supervisor`); without one, a
    /// recipe with a `run` step is refused.
    pub runner: Option<std::sync::Arc<dyn StepRunner>>,
    /// Told what the build is doing while it runs (progress bars, logs).
    pub observer: Option<BuildObserver>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            no_cache: false,
            compression: Compression::Gzip,
            level: None,
            source_date_epoch: 0,
            python: "python3".to_string(),
            runner: None,
            observer: None,
        }
    }
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("no_cache", &self.no_cache)
            .field("compression", &self.compression)
            .field("level", &self.level)
            .field("source_date_epoch", &self.source_date_epoch)
            .field("python", &self.python)
            .field("runner", &self.runner.as_ref().map(|_| "StepRunner"))
            .field("observer", &self.observer)
            .finish()
    }
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// A layer was archived and compressed.
    Built { layer: Digest, bytes_read: u64 },
    /// The layer came from the step cache.
    Cached { layer: Digest },
    /// Layers taken from an OCI base image.
    Imported { layers: usize },
    /// A configuration change (no layer).
    Config,
}

/// One line of the build report: step 0 is the base.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub index: usize,
    pub what: String,
    pub outcome: StepOutcome,
    pub elapsed: Duration,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub name: String,
    /// The manifest digest: the image's identity.
    pub digest: Digest,
    pub config_digest: Digest,
    /// Layers archived and compressed by this build.
    pub layers_built: usize,
    /// Layers reused from the step cache.
    pub layers_cached: usize,
    /// Bytes read from files to write layers (0 when everything was cached).
    pub bytes_archived: u64,
    /// Python files compiled by the syntax check.
    pub python_checked: usize,
    /// The context walks of all `copy` steps together.
    pub walk: WalkStats,
    pub steps: Vec<StepReport>,
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// Why a build failed; every message names the recipe and, when there is one, the step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{recipe}: {source}")]
    Ignore {
        recipe: PathBuf,
        #[source]
        source: IgnoreError,
    },
    #[error("{recipe}: base host-closure: {source}")]
    Closure {
        recipe: PathBuf,
        #[source]
        source: ClosureError,
    },
    #[error("{recipe}: base {base}: {source}")]
    BaseImage {
        recipe: PathBuf,
        base: String,
        #[source]
        source: StoreError,
    },
    #[error("{recipe}: base debootstrap: {source}")]
    Debootstrap {
        recipe: PathBuf,
        #[source]
        source: DebootstrapError,
    },
    #[error("{recipe}: step {step} ({what}): {source}")]
    Walk {
        recipe: PathBuf,
        step: usize,
        what: String,
        #[source]
        source: WalkError,
    },
    #[error("{recipe}: step {step} ({what}): {source}")]
    Layer {
        recipe: PathBuf,
        step: usize,
        what: String,
        #[source]
        source: LayerError,
    },
    #[error("{recipe}: step {step} ({what}): {}", python_errors(.errors))]
    Python {
        recipe: PathBuf,
        step: usize,
        what: String,
        errors: Vec<PyError>,
    },
    #[error("{recipe}: step {step} ({what}): {error}")]
    Run {
        recipe: PathBuf,
        step: usize,
        what: String,
        #[source]
        error: Box<RunError>,
    },
    #[error("{recipe}: {source}")]
    Store {
        recipe: PathBuf,
        #[source]
        source: StoreError,
    },
}

fn python_errors(errors: &[PyError]) -> String {
    let mut s = errors
        .iter()
        .take(5)
        .map(|e| format!("{}:{}: {}", e.path, e.line, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > 5 {
        s.push_str(&format!(" (and {} more)", errors.len() - 5));
    }
    s
}

/// A step cache entry: the layer a key produced.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    layer: Descriptor,
    diff_id: Digest,
}

/// The layer blob a cache entry file points at (`None` if unreadable).
pub(crate) fn cache_entry_blob(path: &Path) -> Option<Digest> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<CacheEntry>(&bytes)
        .ok()
        .map(|e| e.layer.digest)
}

/// The image being assembled.
struct Image {
    layers: Vec<Descriptor>,
    config: ImageConfig,
    /// Identity of what the next layer sits on.
    parent: String,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn describe(step: &Step) -> String {
    match step {
        Step::Copy { src, dst } => format!("copy {src} -> {dst}"),
        Step::Run(argv) => format!("run {argv:?}"),
        Step::Env(m) => format!(
            "env {}",
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Step::Workdir(w) => format!("workdir {w}"),
        Step::User(u) => format!("user {u}"),
        Step::Entrypoint(a) => format!("entrypoint {a:?}"),
        Step::Cmd(a) => format!("cmd {a:?}"),
        Step::Labels(m) => format!("labels {m:?}"),
    }
}

impl Store {
    /// Builds the recipe at `recipe_path` and names the image `name`.
    pub fn build(
        &self,
        recipe_path: &Path,
        name: &str,
        opts: &BuildOptions,
    ) -> Result<BuildReport, BuildError> {
        let start = Instant::now();
        let recipe_p = recipe_path.to_path_buf();
        let store_err = |source| BuildError::Store {
            recipe: recipe_p.clone(),
            source,
        };
        check_name(name).map_err(store_err)?;
        let recipe = load_recipe(recipe_path)?;
        let _gc = self.lock_gc(false).map_err(store_err)?;
        let mut b = Builder {
            store: self,
            recipe_path,
            opts,
            wants_python: recipe.check_python.unwrap_or(true)
                && recipe.steps.iter().any(|s| matches!(s, Step::Copy { .. })),
            checker: None,
            report: BuildReport {
                name: name.to_string(),
                digest: Digest::of(b""),
                config_digest: Digest::of(b""),
                layers_built: 0,
                layers_cached: 0,
                bytes_archived: 0,
                python_checked: 0,
                walk: WalkStats::default(),
                steps: Vec::new(),
                warnings: Vec::new(),
                elapsed: Duration::ZERO,
            },
        };
        b.emit(|| BuildEvent::Started {
            image: name.to_string(),
            steps: recipe.steps.len() + 1,
        });
        b.emit(|| BuildEvent::StepStarted {
            index: 0,
            what: format!("base {}", recipe.base),
        });
        let mut image = b.base(&recipe)?;
        b.step_finished(0);
        let context = recipe.context_dir(recipe_path);
        let ignore = b.ignore_rules(&recipe, &context)?;
        for (i, step) in recipe.steps.iter().enumerate() {
            b.emit(|| BuildEvent::StepStarted {
                index: i + 1,
                what: describe(step),
            });
            b.step(&recipe, &context, &ignore, i + 1, step, &mut image)?;
            b.step_finished(i + 1);
        }
        // The checker is not needed any more.
        b.checker = None;
        let config = serde_json::to_vec(&image.config).map_err(|source| {
            store_err(StoreError::Json {
                path: recipe_path.to_path_buf(),
                source,
            })
        })?;
        let config_desc = self.put_blob(MEDIA_CONFIG, &config).map_err(store_err)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_string()),
            config: config_desc.clone(),
            layers: image.layers,
            annotations: Default::default(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|source| {
            store_err(StoreError::Json {
                path: recipe_path.to_path_buf(),
                source,
            })
        })?;
        let desc = self
            .put_blob(MEDIA_MANIFEST, &manifest)
            .map_err(store_err)?;
        self.tag(name, &desc).map_err(store_err)?;
        let mut report = b.report;
        report.digest = desc.digest;
        report.config_digest = config_desc.digest;
        report.elapsed = start.elapsed();
        if let Some(o) = &opts.observer {
            (o.0)(&BuildEvent::Done {
                image: name.to_string(),
                digest: report.digest.clone(),
                elapsed: report.elapsed,
            });
        }
        Ok(report)
    }
}

struct Builder<'a> {
    store: &'a Store,
    recipe_path: &'a Path,
    opts: &'a BuildOptions,
    report: BuildReport,
    /// A copy step may check Python sources: start the checker at the first rebuilt layer.
    wants_python: bool,
    /// The Python checker, once started (or why it could not be).
    checker: Option<Result<Checker, CheckerError>>,
}

impl Builder<'_> {
    fn emit(&self, event: impl FnOnce() -> BuildEvent) {
        if let Some(o) = &self.opts.observer {
            (o.0)(&event());
        }
    }

    /// Reports step `index` once it is in the report (a `scratch` base has no step 0).
    fn step_finished(&self, index: usize) {
        if let Some(last) = self.report.steps.last().filter(|s| s.index == index) {
            self.emit(|| BuildEvent::StepFinished(last.clone()));
        }
    }

    fn recipe(&self) -> PathBuf {
        self.recipe_path.to_path_buf()
    }

    fn base(&mut self, recipe: &Recipe) -> Result<Image, BuildError> {
        let t = Instant::now();
        let dir = self.recipe_path.parent().unwrap_or(Path::new("."));
        let base = recipe.base_kind(dir).ok_or_else(|| {
            BuildError::Recipe(RecipeError::Base {
                path: self.recipe(),
                base: recipe.base.clone(),
            })
        })?;
        let mut image = Image {
            layers: Vec::new(),
            config: ImageConfig {
                architecture: host_architecture().to_string(),
                os: "linux".to_string(),
                rootfs: RootFs {
                    kind: "layers".to_string(),
                    diff_ids: Vec::new(),
                },
                ..Default::default()
            },
            parent: "scratch".to_string(),
        };
        image.config.config.set_env("PATH", DEFAULT_PATH);
        match base {
            Base::Scratch => {}
            Base::HostClosure => {
                let what = format!(
                    "host-closure binaries={:?} packages={:?} paths={:?}",
                    recipe.binaries, recipe.packages, recipe.paths
                );
                let c = closure::gather(
                    &recipe.binaries,
                    &recipe.packages,
                    &recipe.paths,
                    Some(&self.store.cache_dir()),
                )
                .map_err(|source| BuildError::Closure {
                    recipe: self.recipe(),
                    source,
                })?;
                self.report.warnings.extend(c.warnings);
                let content = c.key.unwrap_or_else(|| Digest::of(b""));
                self.layer(0, &what, &content, Some(&c.tree), &mut image, t)?;
            }
            Base::Oci(src) => {
                self.oci_base(&recipe.base, &mut image, t, |s| s.import_manifest(&src))?
            }
            Base::OciArchive(p) => self.oci_base(&recipe.base, &mut image, t, |s| {
                s.import_manifest(&p.to_string_lossy())
            })?,
            Base::DockerArchive(p) => self.oci_base(&recipe.base, &mut image, t, |s| {
                crate::docker_archive::import_source(s, &p.to_string_lossy())
            })?,
            Base::Debootstrap => self.debootstrap_base(recipe, &mut image, t)?,
        }
        Ok(image)
    }

    /// The `debootstrap` base: one layer, from the step cache or made by `debootstrap`.
    fn debootstrap_base(
        &mut self,
        recipe: &Recipe,
        image: &mut Image,
        t: Instant,
    ) -> Result<(), BuildError> {
        let layer = debootstrap::Spec::from_recipe(recipe)
            .and_then(|spec| {
                let l = debootstrap::base_layer(self.store, &spec, self.opts)?;
                Ok((spec.describe(), l))
            })
            .map_err(|source| BuildError::Debootstrap {
                recipe: self.recipe(),
                source,
            });
        let (what, l) = layer?;
        self.report.warnings.extend(l.warnings);
        let outcome = if l.built {
            self.report.layers_built += 1;
            self.report.bytes_archived += l.bytes_read;
            StepOutcome::Built {
                layer: l.descriptor.digest.clone(),
                bytes_read: l.bytes_read,
            }
        } else {
            self.report.layers_cached += 1;
            StepOutcome::Cached {
                layer: l.descriptor.digest.clone(),
            }
        };
        image.parent = l.descriptor.digest.to_string();
        image.layers.push(l.descriptor);
        image.config.rootfs.diff_ids.push(l.diff_id);
        image.config.history.push(History {
            created_by: Some(what.clone()),
            ..Default::default()
        });
        self.report.steps.push(StepReport {
            index: 0,
            what,
            outcome,
            elapsed: t.elapsed(),
        });
        Ok(())
    }

    /// An image base: `import` copies it into the store and names its manifest.
    fn oci_base(
        &mut self,
        base: &str,
        image: &mut Image,
        t: Instant,
        import: impl FnOnce(&Store) -> Result<Descriptor, StoreError>,
    ) -> Result<(), BuildError> {
        let err = |source| BuildError::BaseImage {
            recipe: self.recipe_path.to_path_buf(),
            base: base.to_string(),
            source,
        };
        let desc = import(self.store).map_err(err)?;
        let path = self.store.blob_path(&desc.digest);
        let m: Manifest =
            parse_json(&path, &self.store.read_blob(&desc.digest).map_err(err)?).map_err(err)?;
        let cpath = self.store.blob_path(&m.config.digest);
        let mut config: ImageConfig = parse_json(
            &cpath,
            &self.store.read_blob(&m.config.digest).map_err(err)?,
        )
        .map_err(err)?;
        config.created = None;
        image.layers = m.layers.clone();
        image.config = config;
        image.parent = desc.digest.to_string();
        self.report.steps.push(StepReport {
            index: 0,
            what: format!("base {base}"),
            outcome: StepOutcome::Imported {
                layers: m.layers.len(),
            },
            elapsed: t.elapsed(),
        });
        Ok(())
    }

    fn ignore_rules(&self, recipe: &Recipe, context: &Path) -> Result<Ignore, BuildError> {
        let mut ig = Ignore::default();
        let file = recipe
            .ignore_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(".dockerignore"));
        let path = context.join(&file);
        match std::fs::read_to_string(&path) {
            Ok(text) => ig
                .add_lines(&path.to_string_lossy(), &text)
                .map_err(|source| BuildError::Ignore {
                    recipe: self.recipe(),
                    source,
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && recipe.ignore_file.is_none() => {}
            Err(source) => {
                return Err(BuildError::Store {
                    recipe: self.recipe(),
                    source: StoreError::Io { path, source },
                })
            }
        }
        for (i, p) in recipe.ignore.iter().enumerate() {
            ig.add(p).map_err(|e| BuildError::Ignore {
                recipe: self.recipe(),
                source: IgnoreError {
                    source_name: "ignore".to_string(),
                    line: i + 1,
                    pattern: p.clone(),
                    message: e.to_string(),
                },
            })?;
        }
        Ok(ig)
    }

    fn step(
        &mut self,
        recipe: &Recipe,
        context: &Path,
        ignore: &Ignore,
        index: usize,
        step: &Step,
        image: &mut Image,
    ) -> Result<(), BuildError> {
        let t = Instant::now();
        let what = describe(step);
        let rc = &mut image.config.config;
        match step {
            Step::Copy { src, dst } => {
                let c = walk::collect(context, ignore, src, dst).map_err(|source| {
                    BuildError::Walk {
                        recipe: self.recipe(),
                        step: index,
                        what: what.clone(),
                        source,
                    }
                })?;
                self.report.walk.dirs_read += c.stats.dirs_read;
                self.report.walk.files_opened += c.stats.files_opened;
                self.report.walk.bytes_hashed += c.stats.bytes_hashed;
                self.report.walk.excluded += c.stats.excluded;
                let content = c.content_key.clone().unwrap_or_else(|| Digest::of(b""));
                let check = recipe.check_python.unwrap_or(true) && !c.py_files.is_empty();
                let py = if check { c.py_files.as_slice() } else { &[] };
                return self.layer_checked(index, &what, &content, Some(&c.tree), py, image, t);
            }
            Step::Run(argv) => return self.run_step(index, &what, argv, image, t),
            Step::Env(m) => m.iter().for_each(|(k, v)| rc.set_env(k, v)),
            Step::Workdir(w) => rc.working_dir = Some(w.clone()),
            Step::User(u) => rc.user = Some(u.clone()),
            Step::Entrypoint(a) => rc.entrypoint = Some(a.clone()),
            Step::Cmd(a) => rc.cmd = Some(a.clone()),
            Step::Labels(m) => rc
                .labels
                .extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
        }
        image.config.history.push(History {
            created_by: Some(what.clone()),
            empty_layer: true,
            ..Default::default()
        });
        self.report.steps.push(StepReport {
            index,
            what,
            outcome: StepOutcome::Config,
            elapsed: t.elapsed(),
        });
        Ok(())
    }

    fn layer(
        &mut self,
        index: usize,
        what: &str,
        content: &Digest,
        tree: Option<&Tree>,
        image: &mut Image,
        t: Instant,
    ) -> Result<(), BuildError> {
        self.layer_checked(index, what, content, tree, &[], image, t)
    }

    /// The step cache entry of a layer step: its key is the digest of the parent, the step,
    /// its content and the layer format.
    fn cache_entry_path(&self, image: &Image, what: &str, content: &Digest, py: bool) -> PathBuf {
        let o = self.opts;
        let mut k = KeyHasher::new();
        // v2: zstd layers are written by zstd's multi-threaded encoder (other frames).
        k.field("agent-images step v2")
            .field(&image.parent)
            .field(what)
            .field(content.as_str())
            .field(o.compression.name())
            .field(format!("{:?}", o.level))
            .field(o.source_date_epoch.to_le_bytes())
            // A layer cached without the Python check is not reused once the check is on.
            .field(if py { "python-checked" } else { "-" });
        let key = k.finish();
        self.store.cache_dir().join(format!("{}.json", key.hex()))
    }

    /// The cache entry at `path` if its layer blob is still in the store.
    fn cached(&self, path: &Path) -> Option<CacheEntry> {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
            .filter(|e| {
                std::fs::metadata(self.store.blob_path(&e.layer.digest))
                    .is_ok_and(|m| m.len() == e.layer.size)
            })
    }

    /// Adds the layer made of `tree`: from the cache under its key, or written (after the
    /// Python check of `py`).
    #[allow(clippy::too_many_arguments)]
    fn layer_checked(
        &mut self,
        index: usize,
        what: &str,
        content: &Digest,
        tree: Option<&Tree>,
        py: &[(String, PathBuf)],
        image: &mut Image,
        t: Instant,
    ) -> Result<(), BuildError> {
        let o = self.opts;
        let entry_path = self.cache_entry_path(image, what, content, !py.is_empty());
        let cached = if o.no_cache {
            None
        } else {
            self.cached(&entry_path)
        };
        let outcome = match cached {
            Some(e) => {
                self.report.layers_cached += 1;
                image.layers.push(e.layer.clone());
                image.config.rootfs.diff_ids.push(e.diff_id);
                StepOutcome::Cached {
                    layer: e.layer.digest,
                }
            }
            None => {
                // `None`: the caller saw this step in the cache (a `run` step, whose tree only
                // exists once it ran); the entry must not have gone since.
                let tree = tree.ok_or_else(|| BuildError::Layer {
                    recipe: self.recipe(),
                    step: index,
                    what: what.to_string(),
                    source: LayerError {
                        path: entry_path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the step's cache entry or its layer vanished during the build",
                        ),
                    },
                })?;
                if self.wants_python && self.checker.is_none() {
                    // Starts now and gets ready while this layer is written.
                    self.checker = Some(Checker::start(&o.python));
                }
                self.python_check(index, what, py)?;
                let total = if o.observer.is_some() {
                    layer::file_bytes(tree)
                } else {
                    0
                };
                let mut progress = |done: u64| {
                    self.emit(|| BuildEvent::LayerBytes { index, done, total });
                };
                let blob = layer::write_layer_with_progress(
                    tree,
                    o.compression,
                    o.level,
                    o.source_date_epoch,
                    &self.store.blobs_dir(),
                    &mut progress,
                )
                .map_err(|source| BuildError::Layer {
                    recipe: self.recipe(),
                    step: index,
                    what: what.to_string(),
                    source,
                })?;
                let entry = CacheEntry {
                    layer: blob.descriptor.clone(),
                    diff_id: blob.diff_id.clone(),
                };
                // A cache entry that cannot be written only costs a rebuild next time.
                if let Ok(bytes) = serde_json::to_vec(&entry) {
                    if let Err(e) = crate::store::write_atomic(&entry_path, &bytes) {
                        self.report
                            .warnings
                            .push(format!("step {index}: cache entry not saved: {e}"));
                    }
                }
                self.report.layers_built += 1;
                self.report.bytes_archived += blob.bytes_read;
                image.layers.push(blob.descriptor.clone());
                image.config.rootfs.diff_ids.push(blob.diff_id);
                StepOutcome::Built {
                    layer: blob.descriptor.digest,
                    bytes_read: blob.bytes_read,
                }
            }
        };
        if let Some(last) = image.layers.last() {
            image.parent = last.digest.to_string();
        }
        image.config.history.push(History {
            created_by: Some(what.to_string()),
            ..Default::default()
        });
        self.report.steps.push(StepReport {
            index,
            what: what.to_string(),
            outcome,
            elapsed: t.elapsed(),
        });
        Ok(())
    }

    fn python_check(
        &mut self,
        index: usize,
        what: &str,
        py: &[(String, PathBuf)],
    ) -> Result<(), BuildError> {
        if py.is_empty() {
            return Ok(());
        }
        let python = &self.opts.python;
        let checker = self.checker.get_or_insert_with(|| Checker::start(python));
        let result = match checker {
            Ok(c) => c.check(py),
            Err(why) => Err(why.clone()),
        };
        match result {
            Ok(errors) if errors.is_empty() => {
                self.report.python_checked += py.len();
                Ok(())
            }
            Ok(errors) => Err(BuildError::Python {
                recipe: self.recipe(),
                step: index,
                what: what.to_string(),
                errors,
            }),
            Err(why) => {
                self.report.warnings.push(format!(
                    "step {index} ({what}): Python sources not checked: {why}"
                ));
                Ok(())
            }
        }
    }
}
