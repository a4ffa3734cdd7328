#!/usr/bin/env bash
# Runs `agent-bench soak` with h1's daemons under heaptrack, to find what holds the daemon's
# heap as it lives (README, "Soak"). Run as root:
#   scripts/heaptrack-soak.sh [MINUTES] [SEED]
# Needs heaptrack (apt-get install heaptrack). Builds a release with line tables, copies the
# benches' binaries to OUT/bin with a wrapper in place of agent-supervisor that starts
# `daemon ... --host h1` with heaptrack's preload (exec'd, so the pid the soak checks is the
# daemon's), and leaves one OUT/h1.PID.gz per h1 daemon. The soak kills h1's first daemon
# in its first round: that file's peak consumers are a short life's, the second file's a long
# life's; print and compare them with
#   heaptrack_print -f OUT/h1.PID.gz --print-peaks 1 --print-leaks 1 -n 20 -s 12
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
seed=${2:-}
out=${OUT:-/tmp/heaptrack-soak}
preload=/usr/lib/heaptrack/libheaptrack_preload.so
interpret=/usr/lib/heaptrack/libexec/heaptrack_interpret
for f in "$preload" "$interpret"; do
  [[ -e $f ]] || { echo "heaptrack-soak: no $f (apt-get install heaptrack)" >&2; exit 1; }
done

CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --workspace --bins
rm -rf "$out" && mkdir -p "$out/bin"
for b in agent-bench supervisorctl agent-bridge agent-launch; do
  cp "target/release/$b" "$out/bin/"
done
real=$(pwd)/target/release/agent-supervisor
cat > "$out/bin/agent-supervisor" <<EOF
#!/bin/sh
case "\$*" in
  "daemon "*"--host h1"*)
    pipe=$out/fifo.\$\$
    mkfifo "\$pipe"
    $interpret < "\$pipe" | gzip -c > $out/h1.\$\$.gz &
    # The daemon's own re-exec (glibc's per-thread caches off) done here instead, so that
    # heaptrack follows one program from its start.
    export GLIBC_TUNABLES=glibc.malloc.tcache_count=0 AGENT_SUPERVISOR_TUNABLES_WERE=-
    LD_PRELOAD=$preload DUMP_HEAPTRACK_OUTPUT="\$pipe" exec $real "\$@"
    ;;
esac
exec $real "\$@"
EOF
chmod +x "$out/bin/agent-supervisor"
args=(soak --minutes "$minutes")
[[ -n $seed ]] && args+=(--seed "$seed")
"$out/bin/agent-bench" "${args[@]}" || true
ls -l "$out"/h1.*.gz
