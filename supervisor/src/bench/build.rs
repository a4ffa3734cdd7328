//! `agent-supervisor bench build`: image build times on the example's `agent-python` image —
//! cold, no-change rebuild, one agent file changed — beside the floor `tar c | zstd` and
//! `tar c | gzip` of the same tree, in one run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_images::{BuildOptions, Compression, Store};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Runs the benchmark; `runs` rebuilds of each kind are measured (median).
pub fn run(runs: usize) -> Result<String, String> {
    let runs = runs.max(1);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ai-system");
    let tmp = std::env::temp_dir().join(format!("as-bench-build-{}", std::process::id()));
    let result = run_in(&example, &tmp, runs);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(example: &Path, tmp: &Path, runs: usize) -> Result<String, String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    let ctx = tmp.join("ai-system");
    std::fs::create_dir_all(ctx.join("images")).map_err(io("create the build context"))?;
    std::fs::create_dir_all(ctx.join("agents")).map_err(io("create the build context"))?;
    for f in ["images/agent-python.yaml", "agents/stand_in_agent.py"] {
        std::fs::copy(example.join(f), ctx.join(f)).map_err(io(&format!("copy {f}")))?;
    }
    let recipe = ctx.join("images/agent-python.yaml");
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut cold_zstd = Duration::ZERO;
    let mut cold_gzip = Duration::ZERO;
    let mut nochange = Vec::new();
    let mut changed = Vec::new();
    for compression in [Compression::Zstd, Compression::Gzip] {
        let name = format!("{compression:?}").to_lowercase();
        let store = Store::open(&tmp.join(format!("state-{name}"))).map_err(|e| e.to_string())?;
        let opts = BuildOptions {
            compression,
            ..BuildOptions::default()
        };
        let t = Instant::now();
        let r = store
            .build(&recipe, "agent-python", &opts)
            .map_err(|e| e.to_string())?;
        let cold = t.elapsed();
        if compression == Compression::Gzip {
            cold_gzip = cold;
        }
        rows.push((
            format!("cold build ({name})"),
            secs(cold),
            format!(
                "{} layers, {} MiB archived",
                r.layers_built,
                r.bytes_archived >> 20
            ),
        ));
        if compression == Compression::Zstd {
            cold_zstd = cold;
            for i in 0..runs {
                let t = Instant::now();
                let r = store
                    .build(&recipe, "agent-python", &opts)
                    .map_err(|e| e.to_string())?;
                nochange.push(t.elapsed());
                if r.layers_built != 0 {
                    return Err(format!(
                        "no-change rebuild {i} rebuilt {} layers",
                        r.layers_built
                    ));
                }
                let agent = ctx.join("agents/stand_in_agent.py");
                let mut text = std::fs::read_to_string(&agent).map_err(io("read the agent"))?;
                text.push_str(&format!("\n# change {i}\n"));
                std::fs::write(&agent, text).map_err(io("change the agent"))?;
                let t = Instant::now();
                let r = store
                    .build(&recipe, "agent-python", &opts)
                    .map_err(|e| e.to_string())?;
                changed.push(t.elapsed());
                if r.layers_built != 1 {
                    return Err(format!(
                        "one-file rebuild {i} rebuilt {} layers, expected 1",
                        r.layers_built
                    ));
                }
            }
        }
    }
    // The floor: archive and compress the same tree with tar and the compressors.
    let store = Store::open(&tmp.join("state-zstd")).map_err(|e| e.to_string())?;
    let info = store.inspect("agent-python").map_err(|e| e.to_string())?;
    let tree = tmp.join("tree");
    std::fs::create_dir_all(&tree).map_err(io("create the tree"))?;
    for l in &info.layers {
        let media = agent_rootfs::Compression::from_media_type(&l.descriptor.media_type)
            .ok_or("unknown layer media type")?;
        agent_rootfs::unpack_layer(&l.path, media, &tree).map_err(|e| e.to_string())?;
    }
    let mut floor_zstd = None;
    let mut floor_gzip = None;
    for (name, cmd) in [
        ("tar c | zstd -3", "zstd -3 -q -T1"),
        ("tar c | gzip -6", "gzip -6"),
    ] {
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -cf - . | {cmd} > /dev/null",
                tree.display()
            ))
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let d = t.elapsed();
        if ok {
            if name.contains("zstd") {
                floor_zstd = Some(d);
            } else {
                floor_gzip = Some(d);
            }
            rows.push((format!("floor: {name}"), secs(d), "same tree".into()));
        } else {
            rows.push((
                format!("floor: {name}"),
                "-".into(),
                format!("{} is not installed", cmd.split(' ').next().unwrap_or(cmd)),
            ));
        }
    }
    let buildah = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("buildah").is_file());
    rows.push((
        "buildah bud".into(),
        "-".into(),
        if buildah {
            "not run: the recipe's host-closure base has no Containerfile equivalent without a registry base image, and this machine reaches no registry".into()
        } else {
            "not installed (apt-get install buildah); and a Containerfile needs a registry base image this machine cannot reach".into()
        },
    ));
    let nc = median(nochange);
    let ch = median(changed);
    rows.insert(
        1,
        (
            "no-change rebuild (zstd, median)".into(),
            secs(nc),
            format!("{runs} runs"),
        ),
    );
    rows.insert(
        2,
        (
            "one agent file changed (zstd, median)".into(),
            secs(ch),
            format!("{runs} runs"),
        ),
    );
    let mut out = format!(
        "{:<40} {:>10}  {}\n",
        "build of agent-python", "time", "notes"
    );
    for (a, b, c) in &rows {
        out.push_str(&format!("{a:<40} {b:>10}  {c}\n"));
    }
    out.push_str("\ntargets:\n");
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    out.push_str(&format!(
        "  no-change rebuild <= 0.3 s: {} ({})\n",
        mark(nc <= Duration::from_millis(300)),
        secs(nc)
    ));
    out.push_str(&format!(
        "  one file changed <= 1 s: {} ({})\n",
        mark(ch <= Duration::from_secs(1)),
        secs(ch)
    ));
    for (floor, cold, name) in [
        (floor_zstd, cold_zstd, "zstd"),
        (floor_gzip, cold_gzip, "gzip"),
    ] {
        if let Some(f) = floor {
            let ratio = f.as_secs_f64() / cold.as_secs_f64().max(1e-9);
            out.push_str(&format!("  cold build throughput >= 0.5x tar|{name}: {} ({ratio:.2}x; the cold build also collects the host closure with ldd and compiles the Python it copies)\n", mark(ratio >= 0.5)));
        }
    }
    Ok(out)
}
