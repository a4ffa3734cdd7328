//! Build timings of the example's `agent-python` image: cold, unchanged, one file changed.
//!
//! `cargo run --release -p agent-images --example bench [gzip|zstd|none]`

use std::path::Path;
use std::time::Instant;

use agent_images::{BuildOptions, Compression, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let compression: Compression = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "gzip".to_string())
        .parse()?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ai-system");
    let tmp = std::env::temp_dir().join(format!("agent-images-bench-{}", std::process::id()));
    let ctx = tmp.join("ai-system");
    std::fs::create_dir_all(ctx.join("images"))?;
    std::fs::create_dir_all(ctx.join("agents"))?;
    for (from, to) in [
        ("images/agent-python.yaml", "images/agent-python.yaml"),
        ("agents/stand_in_agent.py", "agents/stand_in_agent.py"),
    ] {
        std::fs::copy(example.join(from), ctx.join(to))?;
    }
    let recipe = ctx.join("images/agent-python.yaml");
    let store = Store::open(&tmp.join("state"))?;
    let opts = BuildOptions {
        compression,
        ..Default::default()
    };
    let line = |what: &str, r: &agent_images::BuildReport, secs: f64| {
        println!(
            "{what:<22} {secs:>7.3} s  built {} cached {}  read {} MB  {}",
            r.layers_built,
            r.layers_cached,
            r.bytes_archived >> 20,
            r.digest
        );
    };
    let t = Instant::now();
    let r = store.build(&recipe, "agent-python", &opts)?;
    line("cold", &r, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let r = store.build(&recipe, "agent-python", &opts)?;
    line("unchanged", &r, t.elapsed().as_secs_f64());
    let agent = ctx.join("agents/stand_in_agent.py");
    let mut text = std::fs::read_to_string(&agent)?;
    text.push_str("\n# changed\n");
    std::fs::write(&agent, text)?;
    let t = Instant::now();
    let r = store.build(&recipe, "agent-python", &opts)?;
    line("one file changed", &r, t.elapsed().as_secs_f64());
    let size: u64 = store.inspect("agent-python")?.size;
    println!("image size {} MB ({})", size >> 20, compression.name());
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
