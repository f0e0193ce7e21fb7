# Sourced by the other scripts: puts Node.js 24 on PATH, installing it from the npm registry's `node`
# package when the machine's node is older (Debian 12 images ship Node 20, which is end-of-life).
ISOMESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE24_DIR="$ISOMESH_ROOT/.tools/node24"
# Trust the system CA bundle (registry access behind a TLS-inspecting proxy).
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
if ! node -v 2>/dev/null | grep -q '^v24\.'; then
  if [ ! -x "$NODE24_DIR/node_modules/node/bin/node" ]; then
    echo "isomesh: installing Node.js 24 into .tools/node24 (npm package 'node@24')" >&2
    mkdir -p "$NODE24_DIR"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$NODE24_DIR" node@24 >&2
  fi
  export PATH="$NODE24_DIR/node_modules/node/bin:$PATH"
fi
