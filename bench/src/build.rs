//! `agent-bench build`: image build times on the example's `agent-python` image —
//! cold, no-change rebuild, one agent file changed — beside the floor `tar c | zstd` and
//! `tar c | gzip` of the same tree and `buildah bud` of that tree, in one run.
//!
//! Every time is the median of `runs` runs; a cold build starts from an empty store each time
//! (no step cache, no `ldd` memo), with the host's files in the page cache like the floor's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_images::{BuildOptions, BuildReport, Compression, StepOutcome, Store};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

type Row = (String, String, String);

/// Runs the benchmark; every row is the median of `runs` runs.
pub fn run(runs: usize) -> Result<String, String> {
    let runs = runs.max(1);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ai-system");
    let tmp = std::env::temp_dir().join(format!("as-bench-build-{}", std::process::id()));
    let result = run_in(&example, &tmp, runs);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> String {
    let what = what.to_string();
    move |e| format!("{what}: {e}")
}

/// Median cold build time (a new store per run) and the last run's report.
fn cold_builds(
    tmp: &Path,
    recipe: &Path,
    opts: &BuildOptions,
    runs: usize,
) -> Result<(Duration, BuildReport), String> {
    let name = opts.compression.name();
    let mut times = Vec::new();
    let mut last = None;
    for i in 0..runs {
        let dir = tmp.join(format!("state-{name}-{i}"));
        let store = Store::open(&dir).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let r = store
            .build(recipe, "agent-python", opts)
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        if i + 1 < runs {
            let _ = std::fs::remove_dir_all(&dir);
        }
        last = Some(r);
    }
    let r = last.ok_or("no cold build ran")?;
    Ok((median(times), r))
}

/// Where a cold build's time went: the base step (closure + archive) and the copy steps.
fn split(r: &BuildReport) -> String {
    let base = r
        .steps
        .iter()
        .filter(|s| s.index == 0)
        .map(|s| s.elapsed)
        .sum::<Duration>();
    let copies = r
        .steps
        .iter()
        .filter(|s| s.index > 0 && matches!(s.outcome, StepOutcome::Built { .. }))
        .map(|s| s.elapsed)
        .sum::<Duration>();
    format!(
        "{} layers, {} MiB archived; last run: base {} (closure + archive), copy {} (+ Python check)",
        r.layers_built,
        r.bytes_archived >> 20,
        secs(base),
        secs(copies)
    )
}

fn run_in(example: &Path, tmp: &Path, runs: usize) -> Result<String, String> {
    let ctx = tmp.join("ai-system");
    std::fs::create_dir_all(ctx.join("images")).map_err(io("create the build context"))?;
    std::fs::create_dir_all(ctx.join("agents")).map_err(io("create the build context"))?;
    for f in ["images/agent-python.yaml", "agents/stand_in_agent.py"] {
        std::fs::copy(example.join(f), ctx.join(f)).map_err(io(&format!("copy {f}")))?;
    }
    let recipe = ctx.join("images/agent-python.yaml");
    let mut rows: Vec<Row> = Vec::new();
    let zstd = BuildOptions {
        compression: Compression::Zstd,
        ..BuildOptions::default()
    };
    let gzip = BuildOptions {
        compression: Compression::Gzip,
        ..BuildOptions::default()
    };
    let (cold_zstd, rz) = cold_builds(tmp, &recipe, &zstd, runs)?;
    rows.push(("cold build (zstd)".into(), secs(cold_zstd), split(&rz)));
    let (nc, ch) = rebuilds(tmp, &ctx, &recipe, &zstd, runs)?;
    rows.push((
        "no-change rebuild (zstd)".into(),
        secs(nc),
        "every step from the cache".into(),
    ));
    rows.push((
        "one agent file changed (zstd)".into(),
        secs(ch),
        "the copy step rebuilt and checked".into(),
    ));
    let (cold_gzip, rg) = cold_builds(tmp, &recipe, &gzip, runs)?;
    rows.push(("cold build (gzip)".into(), secs(cold_gzip), split(&rg)));

    // The floor: the same tree, archived and compressed by tar and the compressors.
    let store =
        Store::open(&tmp.join(format!("state-zstd-{}", runs - 1))).map_err(|e| e.to_string())?;
    let info = store.inspect("agent-python").map_err(|e| e.to_string())?;
    let bctx = tmp.join("buildah-context");
    let tree = bctx.join("tree");
    std::fs::create_dir_all(&tree).map_err(io("create the tree"))?;
    for l in &info.layers {
        let media = agent_rootfs::Compression::from_media_type(&l.descriptor.media_type)
            .ok_or("unknown layer media type")?;
        agent_rootfs::unpack_layer(&l.path, media, &tree).map_err(|e| e.to_string())?;
    }
    let mut floors = [None, None];
    for (k, (name, cmd)) in [
        ("tar c | zstd -3", "zstd -3 -q -T1"),
        ("tar c | gzip -6", "gzip -6"),
    ]
    .into_iter()
    .enumerate()
    {
        let pipeline = format!("tar -C {} -cf - . | {cmd} > /dev/null", tree.display());
        match time_shell(&pipeline, runs) {
            Some(d) => {
                floors[k] = Some(d);
                rows.push((format!("floor: {name}"), secs(d), "same tree".into()));
            }
            None => rows.push((
                format!("floor: {name}"),
                "-".into(),
                format!("{} is not installed", cmd.split(' ').next().unwrap_or(cmd)),
            )),
        }
    }
    rows.extend(buildah_rows(tmp, &bctx, runs));

    let mut out = format!(
        "{:<34} {:>9}  notes (median of {runs} run(s))\n",
        "build of agent-python", "time"
    );
    for (a, b, c) in &rows {
        out.push_str(&format!("{a:<34} {b:>9}  {c}\n"));
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
        (floors[0], cold_zstd, "zstd"),
        (floors[1], cold_gzip, "gzip"),
    ] {
        if let Some(f) = floor {
            let ratio = f.as_secs_f64() / cold.as_secs_f64().max(1e-9);
            out.push_str(&format!(
                "  cold build throughput >= 0.5x tar|{name}: {} ({ratio:.2}x; the cold build also \
                 collects the host closure, hashes, checks the Python it copies and fsyncs)\n",
                mark(ratio >= 0.5)
            ));
        }
    }
    Ok(out)
}

/// Median no-change and one-file-changed rebuild times in the first zstd store.
fn rebuilds(
    tmp: &Path,
    ctx: &Path,
    recipe: &Path,
    opts: &BuildOptions,
    runs: usize,
) -> Result<(Duration, Duration), String> {
    let store =
        Store::open(&tmp.join(format!("state-zstd-{}", runs - 1))).map_err(|e| e.to_string())?;
    let mut nochange = Vec::new();
    let mut changed = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let r = store
            .build(recipe, "agent-python", opts)
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
            .build(recipe, "agent-python", opts)
            .map_err(|e| e.to_string())?;
        changed.push(t.elapsed());
        if r.layers_built != 1 {
            return Err(format!(
                "one-file rebuild {i} rebuilt {} layers, expected 1",
                r.layers_built
            ));
        }
    }
    Ok((median(nochange), median(changed)))
}

/// Median time of `sh -c pipeline`; `None` if it fails.
fn time_shell(pipeline: &str, runs: usize) -> Option<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(pipeline)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        times.push(t.elapsed());
    }
    Some(median(times))
}

/// `buildah bud` of `ctx` (`FROM scratch`, `COPY tree/ /`) with vfs storage in a new root per
/// run; then the same plus `buildah push` to an OCI layout with zstd. The reason instead of a
/// time when buildah is missing or fails.
fn buildah_rows(tmp: &Path, ctx: &Path, runs: usize) -> Vec<Row> {
    let bud_name = "buildah bud (vfs)";
    let push_name = "buildah bud + push oci: (zstd)";
    let file = ctx.join("Containerfile");
    if let Err(e) = std::fs::write(&file, "FROM scratch\nCOPY tree/ /\n") {
        let why = format!("not run: cannot write {}: {e}", file.display());
        return vec![
            (bud_name.into(), "-".into(), why.clone()),
            (push_name.into(), "-".into(), why),
        ];
    }
    if let Err(e) = Command::new("buildah")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        let why = format!("not run: buildah: {e} (apt-get install buildah)");
        return vec![
            (bud_name.into(), "-".into(), why.clone()),
            (push_name.into(), "-".into(), why),
        ];
    }
    let mut bud = Vec::new();
    let mut push = Vec::new();
    for i in 0..runs {
        let root = tmp.join(format!("buildah-{i}"));
        let base = |args: &[&str]| {
            let mut c = Command::new("buildah");
            c.arg("--storage-driver")
                .arg("vfs")
                .arg("--root")
                .arg(root.join("root"))
                .arg("--runroot")
                .arg(root.join("runroot"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            c
        };
        let t = Instant::now();
        let out = base(&["bud", "-q", "-t", "bench:1"]).arg(ctx).output();
        let d = t.elapsed();
        if let Some(why) = failure("buildah bud", out) {
            return vec![
                (bud_name.into(), "-".into(), why.clone()),
                (push_name.into(), "-".into(), why),
            ];
        }
        bud.push(d);
        let dest = format!("oci:{}:bench", root.join("oci").display());
        let t = Instant::now();
        let out = base(&["push", "-q", "--compression-format", "zstd", "bench:1"])
            .arg(&dest)
            .output();
        let p = t.elapsed();
        if let Some(why) = failure("buildah push", out) {
            return vec![
                (
                    bud_name.into(),
                    secs(median(bud)),
                    "vfs storage in a temp root; the layer stays an uncompressed tar".into(),
                ),
                (push_name.into(), "-".into(), why),
            ];
        }
        push.push(d + p);
        let _ = std::fs::remove_dir_all(&root);
    }
    vec![
        (
            bud_name.into(),
            secs(median(bud)),
            "same tree, vfs storage in a temp root; the layer stays an uncompressed tar".into(),
        ),
        (
            push_name.into(),
            secs(median(push)),
            "bud, then the image compressed (zstd) into an OCI layout".into(),
        ),
    ]
}

/// Why a buildah command failed (`None` if it succeeded): the error or its first stderr line.
fn failure(what: &str, out: std::io::Result<std::process::Output>) -> Option<String> {
    match out {
        Err(e) => Some(format!("not run: {what}: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let line = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Some(format!("failed: {what} exited with {}: {line}", o.status))
        }
    }
}
