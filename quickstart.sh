#!/usr/bin/env bash
# One command from a fresh machine to the main job: installs what is needed, builds
# agent-supervisor, and runs the pre-flight check of the example two-host AI system as its
# host "mainpc".
set -euo pipefail
cd "$(dirname "$0")"
sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

sudo_if_needed ./scripts/install-prereqs.sh
cargo build --release --workspace
./target/release/agent-supervisor check examples/ai-system/system.yaml --host mainpc
