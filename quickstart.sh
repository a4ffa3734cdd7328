#!/usr/bin/env bash
# One command from a fresh machine to the main job: installs what is needed, builds
# agent-supervisor, checks the example two-host AI system, builds its images, and runs its
# MainPC share under the daemon (every group from its image) until every agent (Redis
# included) is healthy; then shows `supervisorctl status`.
# Stop it again with: sudo ./target/release/supervisorctl shutdown
set -euo pipefail
cd "$(dirname "$0")"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

as_root ./scripts/install-prereqs.sh
cargo build --release --workspace
# agent-launch, exec'd for every group and agent, linked statically: no dynamic loader work per
# launch (about 0.3 ms less each; see README, Benchmarks).
cargo rustc --release -p agent-launch --bin agent-launch -- -C target-feature=+crt-static
bin=./target/release
system=examples/ai-system/system.yaml

if as_root "$bin/supervisorctl" version 2>/dev/null | grep -q "^daemon "; then
  echo "quickstart: a daemon already runs; showing its status"
else
  "$bin/agent-supervisor" check "$system" --host mainpc
  # The groups run from OCI images built from the recipes in examples/ai-system/images/.
  as_root "$bin/agent-supervisor" build "$system" --host mainpc
  as_root mkdir -p /var/log/agent-supervisor
  as_root sh -c "nohup $bin/agent-supervisor daemon --config $system --host mainpc >> /var/log/agent-supervisor/daemon.log 2>&1 &"
  echo "quickstart: daemon started (log: /var/log/agent-supervisor/daemon.log); waiting for every agent to be healthy"
fi

for _ in $(seq 120); do
  if as_root "$bin/supervisorctl" status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["agents"] and all(a["state"] == "RUNNING" and a["health"] == "healthy" for a in s["agents"]) else 1)
'; then
    as_root "$bin/supervisorctl" status
    echo "quickstart: all agents of host mainpc are healthy; metrics: curl http://127.0.0.1:9000/metrics"
    exit 0
  fi
  sleep 0.5
done
as_root "$bin/supervisorctl" status || true
echo "quickstart: not every agent became healthy within 60 s; see /var/log/agent-supervisor/" >&2
exit 1
