#!/usr/bin/env bash
# One command from a fresh machine to the main job: installs what is needed, builds
# agent-supervisor, and runs the whole example two-host AI system on this one machine: MainPC
# and PC2 as two network namespaces joined by a veth underlay, each with its own daemon,
# state, control socket and cgroup root, every group from its image, the WireGuard bridge
# between them; waits until every agent of both hosts (Redis included) is healthy, then shows
# both hosts' `supervisorctl status` and the bridge.
# Stop it again with: sudo scripts/two-hosts.sh down
set -euo pipefail
cd "$(dirname "$0")"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

as_root ./scripts/install-prereqs.sh
cargo build --release --workspace
# agent-launch, exec'd for every group and agent, linked statically: no dynamic loader work per
# launch (about 0.3 ms less each; see README, Benchmarks).
cargo rustc --release -p agent-launch --bin agent-launch -- -C target-feature=+crt-static
# Both hosts of the example on this machine (two network namespaces, a daemon each, the
# WireGuard bridge between them): see scripts/two-hosts.sh.
as_root env BIN=./target/release ./scripts/two-hosts.sh up
