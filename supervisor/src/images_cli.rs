//! `agent-supervisor build` and `agent-supervisor images ...`: the image store from the
//! command line (the library is `agent-images`).
//!
//! While `build` runs it shows progress on stderr: `indicatif` bars when stderr is a terminal
//! (per image: steps done of all, the current step, bytes archived), otherwise one plain line
//! per finished step (image, step, built/cached, bytes, time):
//! `tiny [2/4] step 1 copy app -> /app: built, 30 bytes, 0.030 s`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_config::defaults;
use agent_images::{BuildEvent, BuildObserver, BuildOptions, Compression, StepOutcome, Store};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Errors of the image commands; each names the system file, image or store.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] Box<agent_images::StoreError>),
    #[error("image {image}: {source}")]
    Build {
        image: String,
        #[source]
        source: Box<agent_images::BuildError>,
    },
}

/// Builds the images the groups of `host` (or just `group`) need; returns the report lines.
pub fn build(
    config: &Path,
    host: Option<&str>,
    group: Option<&str>,
    no_cache: bool,
    compression: Compression,
) -> Result<String, ImagesError> {
    let l = agent_config::load(config).map_err(|e| ImagesError::Config(e.to_string()))?;
    let host = crate::check::local_host(&l, host).map_err(ImagesError::Config)?;
    if let Some(g) = group {
        match l.system.groups.get(g) {
            None => {
                return Err(ImagesError::Config(format!(
                    "group {g:?} is not in {}",
                    config.display()
                )))
            }
            Some(x) if x.host != host => {
                return Err(ImagesError::Config(format!(
                    "group {g} runs on host {}, not {host}",
                    x.host
                )))
            }
            _ => {}
        }
    }
    let mut wanted: Vec<String> = Vec::new();
    for (gname, g) in &l.system.groups {
        let image = defaults::image(g);
        if g.host == host
            && group.is_none_or(|x| x == gname)
            && image != defaults::HOST_IMAGE
            && !wanted.iter().any(|w| w == image)
        {
            wanted.push(image.to_string());
        }
    }
    let d = defaults::daemon(&l.system, &host);
    let store = Store::open(&d.state_dir).map_err(Box::new)?;
    let progress = Arc::new(if std::io::stderr().is_terminal() {
        Progress::bars()
    } else {
        Progress::Plain(Mutex::new(Current::default()))
    });
    let observer = Arc::clone(&progress);
    let runner = crate::build_run::SandboxRunner::for_daemon(&d)
        .map_err(|e| ImagesError::Config(e.to_string()))?;
    let opts = BuildOptions {
        no_cache,
        compression,
        observer: Some(BuildObserver(Arc::new(move |e| observer.event(e)))),
        runner: Some(Arc::new(runner)),
        ..BuildOptions::default()
    };
    let mut out = String::new();
    if wanted.is_empty() {
        out.push_str(&format!(
            "no group of host {host} runs from a built image (all use `host`)\n"
        ));
    }
    for image in wanted {
        let def = l.system.images.get(&image).ok_or_else(|| {
            ImagesError::Config(format!(
                "image {image:?} is not defined under images: in {}",
                config.display()
            ))
        })?;
        let Some(recipe) = &def.recipe else {
            out.push_str(&format!(
                "image {image}: no recipe; import it with `agent-supervisor images import`\n"
            ));
            continue;
        };
        let recipe = l.resolve(recipe);
        let r = store
            .build(&recipe, &image, &opts)
            .map_err(|source| ImagesError::Build {
                image: image.clone(),
                source: Box::new(source),
            })?;
        out.push_str(&format!(
            "image {image}: {} ({} layer(s) built, {} cached, {} bytes archived) in {:.2?}\n",
            r.digest, r.layers_built, r.layers_cached, r.bytes_archived, r.elapsed
        ));
        for w in &r.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    Ok(out)
}

/// The image being built, as the progress display knows it.
#[derive(Default)]
struct Current {
    image: String,
    steps: usize,
    bar: Option<ProgressBar>,
    /// The step being run, for the bar's message.
    what: String,
}

/// How `build` shows its progress on stderr.
enum Progress {
    Bars(MultiProgress, Mutex<Current>),
    Plain(Mutex<Current>),
}

impl Progress {
    fn bars() -> Progress {
        Progress::Bars(
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            Mutex::new(Current::default()),
        )
    }

    fn event(&self, e: &BuildEvent) {
        let (multi, current) = match self {
            Progress::Bars(m, c) => (Some(m), c),
            Progress::Plain(c) => (None, c),
        };
        // A poisoned lock only means an earlier event panicked; the display goes on.
        let mut c = current.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            BuildEvent::Started { image, steps } => {
                c.image = image.clone();
                c.steps = *steps;
                c.bar = multi.map(|m| {
                    let bar = m.add(ProgressBar::new(*steps as u64));
                    let style = ProgressStyle::with_template(
                        "{prefix:.bold} [{bar:20.cyan/blue}] {pos}/{len} steps  {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    bar.set_prefix(image.clone());
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                    bar
                });
            }
            BuildEvent::StepStarted { index, what } => {
                c.what = format!("step {index}: {what}");
                if let Some(bar) = &c.bar {
                    bar.set_message(c.what.clone());
                }
            }
            BuildEvent::LayerBytes { done, total, .. } => {
                if let Some(bar) = &c.bar {
                    bar.set_message(format!(
                        "{}  ({} / {} archived)",
                        c.what,
                        HumanBytes(*done),
                        HumanBytes(*total)
                    ));
                }
            }
            BuildEvent::StepFinished(s) => {
                let outcome = match &s.outcome {
                    StepOutcome::Built { bytes_read, .. } => format!("built, {bytes_read} bytes"),
                    StepOutcome::Cached { .. } => "cached, 0 bytes".to_string(),
                    StepOutcome::Imported { layers } => format!("imported {layers} layer(s)"),
                    StepOutcome::Config => "config".to_string(),
                };
                // `[position/steps]`, then the step's index (0 is the base) as in errors.
                let line = format!(
                    "{} [{}/{}] step {} {}: {outcome}, {:.3} s",
                    c.image,
                    s.index + 1,
                    c.steps,
                    s.index,
                    s.what,
                    s.elapsed.as_secs_f64()
                );
                match &c.bar {
                    Some(bar) => {
                        bar.inc(1);
                        bar.println(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
            BuildEvent::Done {
                digest, elapsed, ..
            } => {
                if let Some(bar) = c.bar.take() {
                    bar.finish_with_message(format!("{digest} in {elapsed:.2?}"));
                }
            }
        }
    }
}

/// The store under `state_dir` (default `/var/lib/agent-supervisor`).
pub fn store(state_dir: Option<PathBuf>) -> Result<Store, ImagesError> {
    let dir = state_dir.unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR));
    Ok(Store::open(&dir).map_err(Box::new)?)
}

/// `images ls`.
pub fn list(store: &Store) -> Result<String, ImagesError> {
    let mut out = format!(
        "{:<24} {:<8} {:>12}  {}\n",
        "NAME", "LAYERS", "SIZE", "DIGEST"
    );
    for i in store.list().map_err(Box::new)? {
        out.push_str(&format!(
            "{:<24} {:<8} {:>12}  {}\n",
            i.name, i.layers, i.size, i.digest
        ));
    }
    Ok(out)
}

/// `images inspect NAME`: manifest, config and layers as JSON.
pub fn inspect(store: &Store, name: &str) -> Result<String, ImagesError> {
    let info = store.inspect(name).map_err(Box::new)?;
    let layers: Vec<serde_json::Value> = info
        .layers
        .iter()
        .map(|l| serde_json::json!({"digest": l.descriptor.digest.to_string(), "media_type": l.descriptor.media_type, "size": l.descriptor.size}))
        .collect();
    let v = serde_json::json!({
        "name": info.name,
        "digest": info.digest.to_string(),
        "size": info.size,
        "config": info.config,
        "layers": layers,
    });
    serde_json::to_string_pretty(&v)
        .map(|s| s + "\n")
        .map_err(|e| ImagesError::Config(format!("image {name}: {e}")))
}
