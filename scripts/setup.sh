#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (root, Node 20) to run and test isomesh:
# Debian packages, Node.js 24, npm dependencies. Idempotent; safe to re-run.
#   --with-bench   also install the benchmark peers and tools (nginx, haproxy, wrk, h2load; strace and
#                  perf for bench/profile.ts; the open-loop generator is built with clang)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ISOMESH_ROOT"

PKGS=(curl iproute2 libbpf1 clang llvm libbpf-dev bpftool util-linux nghttp2-client python3-grpcio)
if [ "${1:-}" = "--with-bench" ]; then PKGS+=(nginx haproxy wrk nghttp2-client strace linux-perf); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "isomesh setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
  else
    echo "isomesh setup: apt-get install ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -d node_modules/isolated-vm ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "isomesh setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
node -e "require('isolated-vm'); require('koffi')" || { echo "isomesh setup: native modules failed to load" >&2; exit 1; }
echo "isomesh setup: ok (node $(node -v))" >&2
