#!/usr/bin/env bash
# The tap suite's Node-version subset on the other supported Nodes (22 and 24
# from scripts/extra-nodes.sh); the default Node runs the whole suite in
# `npm test`. The subset covers every module of lib/ once per version:
#   loop, sockets, servers: smoke, echo, streams   errors: errors
#   the embedding in libuv's phases: busy-poll
#   timers: timers          addresses: address     forward(): forward
#   the addon loader: load  standalone loop: standalone
#   worker_threads (per-environment instance data, cleanup hooks): workers
#   http: http, http-parser, http-node, http-node-app (serveNode on node:http internals)
#   proxy: proxy-tcp, proxy-http, proxy-protocol
#   examples/ (require('iomux') by name, fetch): examples
# Left to the default Node (they test the core or the OS, not Node): batch,
# bulk, concurrency, defer-accept, emfile, http-c10k/-close/-fuzz/-malformed/
# -slowloris/-timeouts, proxy-cli, ref.
# The first extra Node runs on epoll, the next on the default backend
# (io_uring where the kernel has it), and so on alternately. Prints one
# "ok - node vX (backend): test/file" line per file; exits non-zero on a failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
subset=${IOMUX_NODE_SUBSET:-"smoke echo streams busy-poll errors timers address forward load standalone workers http http-parser http-node http-node-app proxy-tcp proxy-http proxy-protocol examples"}
files=()
for f in $subset; do files+=("test/$f.test.ts"); done
nodes=$(bash scripts/extra-nodes.sh)
[ -n "$nodes" ] || { echo "# no extra Node versions here (Linux x64 only)"; exit 0; }
rc=0 i=0
for node_bin in $nodes; do
  if [ $((i % 2)) = 0 ]; then backend=epoll; else backend=default; fi
  i=$((i + 1))
  v=$("$node_bin" -v)
  out=$(mktemp)
  start=$SECONDS
  if [ "$backend" = default ]; then
    "$node_bin" node_modules/.bin/tap -R tap "${files[@]}" >"$out" 2>&1; r=$?
    backend=$("$node_bin" -p "require('./dist').loop.backend")
  else
    IOMUX_BACKEND=$backend "$node_bin" node_modules/.bin/tap -R tap "${files[@]}" >"$out" 2>&1; r=$?
  fi
  sed -n -E "s/^(not )?ok [0-9]+ - (test\/[^ ]+).*/\1ok - node $v ($backend): \2/p" "$out"
  echo "# node $v ($backend): $(grep -E '^# \{' "$out" | tail -1) in $((SECONDS - start)) s"
  if [ "$r" != 0 ]; then
    rc=1
    echo "# node $v: failures:"
    grep -nE '^ +not ok' -A12 "$out" | head -80
  fi
  rm -f "$out"
done
exit $rc
