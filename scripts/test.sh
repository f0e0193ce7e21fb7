#!/usr/bin/env bash
# Sets up the machine and runs the whole test suite (type-check + node --test).
# Privileged tests (eBPF, cgroups, netns) need root; with CI=true a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec npm test
