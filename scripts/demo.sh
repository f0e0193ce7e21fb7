#!/usr/bin/env bash
# Quick start: set up this machine, start the isomesh runtime and configure a demo through its API
# (a tenant, an upstream on loopback, a TypeScript plugin), then print curl commands to try.
# Ctrl-C stops everything the demo started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec node scripts/demo.ts "$@"
