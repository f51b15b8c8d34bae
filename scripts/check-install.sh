#!/usr/bin/env bash
# The install a user does, checked: `npm pack`, then
#  1. install the tarball into a fresh directory with no compiler and no Python
#     on PATH: the prebuild must be used; require('iomux'), echo and HTTP on
#     each backend (scripts/install-smoke.js), on this Node and on the Nodes
#     listed in IOMUX_EXTRA_NODES (paths to node binaries; N-API: one build);
#  2. a prebuild whose recorded glibc (iomux.glibc.json) is newer than this system's must be
#     refused by the loader with a message naming both versions;
#  3. the tarball without its prebuilds, and no compiler: the install fails
#     saying which prebuild it looked for and that it needs a compiler;
#  4. the tarball without its prebuilds, compiler on PATH: builds from source.
# Prints TAP-style "ok - install: ..." / "not ok - install: ..." lines (.ci/run
# counts them) and exits non-zero when any failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/iomux-install-XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
ok() { echo "ok - install: $*"; }
notok() { echo "not ok - install: $*"; failures=$((failures + 1)); }
backends=${IOMUX_SMOKE_BACKENDS:-$([ "$(uname -s)" = Linux ] && echo "epoll io_uring" || echo default)}
npm_flags=(--no-audit --no-fund --prefer-offline --foreground-scripts)

echo "# npm pack (prepack makes the prebuilds this machine can build when prebuilds/ lacks them)"
if ! (cd "$root" && npm pack --pack-destination "$work" >"$work/pack.log" 2>&1); then
  tail -20 "$work/pack.log"; notok "npm pack"; exit 1
fi
tgz=$(ls "$work"/iomux-*.tgz)
ok "npm pack made $(basename "$tgz") ($(du -k "$tgz" | cut -f1) KiB)"
platform=$(node -p 'process.platform + "-" + process.arch')
listing=$(tar tzf "$tgz")
if grep -q "^package/prebuilds/$platform/iomux.*\.node$" <<<"$listing" &&
   grep -q "^package/prebuilds/$platform/iomux.*\.json$" <<<"$listing"; then
  ok "the tarball carries prebuilds/$platform (all: $(sed -n 's|^package/prebuilds/\(.*\.node\)$|\1|p' <<<"$listing" | tr '\n' ' '))"
else
  notok "the tarball carries prebuilds/$platform"
fi

# A PATH with node, npm and a shell only: no cc, gcc, g++, make, python3.
bare="$work/bare-bin"
mkdir -p "$bare"
for tool in node npm sh; do ln -s "$(command -v "$tool")" "$bare/$tool"; done
missing=""
for tool in cc gcc g++ c++ clang make python python3; do
  PATH="$bare" command -v "$tool" >/dev/null 2>&1 && missing="$missing $tool"
done
[ -z "$missing" ] && ok "the bare PATH has no compiler, make or python" || notok "the bare PATH still has:$missing"

smoke() { # dir label [node]
  local dir=$1 label=$2 node=${3:-node} b out envs
  for b in $backends; do
    envs=(PATH="$bare")
    [ "$b" != default ] && envs+=(IOMUX_BACKEND="$b")
    if out=$(cd "$dir" && env "${envs[@]}" "$node" install-smoke.js 2>&1); then
      ok "$label, backend $b: $out"
    else
      notok "$label, backend $b: $(echo "$out" | tail -3 | tr '\n' ' ')"
    fi
  done
}

app() { # name: a fresh directory with a package.json and the smoke script
  mkdir -p "$work/$1"
  echo '{"name":"app","version":"1.0.0","private":true}' >"$work/$1/package.json"
  cp "$root/scripts/install-smoke.js" "$work/$1/"
  echo "$work/$1"
}

echo "# 1. install with no compiler on PATH"
a=$(app with-prebuilds)
if (cd "$a" && PATH="$bare" npm install "${npm_flags[@]}" "$tgz" >"$a/install.log" 2>&1); then
  ok "npm install of the tarball with no compiler"
  grep -q "iomux: using the prebuild prebuilds/$platform/" "$a/install.log" &&
    ok "the install says: $(grep -o 'iomux: using the prebuild.*' "$a/install.log")" ||
    notok "the install names the prebuild it used"
  [ ! -e "$a/node_modules/iomux/build" ] && ok "nothing was compiled (no build/)" || notok "nothing was compiled (no build/)"
  smoke "$a" "node $(node -v), prebuild"
  for extra in ${IOMUX_EXTRA_NODES:-}; do
    smoke "$a" "node $("$extra" -v), prebuild" "$extra"
  done
else
  tail -20 "$a/install.log"; notok "npm install of the tarball with no compiler"
fi

echo "# 2. a prebuild that needs a newer glibc than this system has is refused"
if [ "$(uname -s)" = Linux ] && [ -d "$a/node_modules/iomux" ]; then
  manifest=$(ls "$a"/node_modules/iomux/prebuilds/"$platform"/iomux.glibc.json)
  cp "$manifest" "$work/prebuild.json.orig"
  node -e 'const f=process.argv[1],m=require(f);m.glibc="99.0";require("fs").writeFileSync(f,JSON.stringify(m))' "$manifest"
  out=$(cd "$a" && PATH="$bare" node -e "require('iomux')" 2>&1)
  if echo "$out" | grep -q "needs glibc 99.0 or newer, and this system has glibc"; then
    ok "the loader refuses it: $(echo "$out" | grep -o 'iomux: cannot load.*needs glibc[^,]*, and this system has glibc [0-9.]*')"
  else
    notok "the loader refuses a prebuild for a newer glibc: $(echo "$out" | head -3 | tr '\n' ' ')"
  fi
  cp "$work/prebuild.json.orig" "$manifest"
fi

echo "# 3. without prebuilds and without a compiler: a clear failure"
mkdir -p "$work/unpack"
tar xzf "$tgz" -C "$work/unpack"
rm -rf "$work/unpack/package/prebuilds"
src_tgz="$work/iomux-source.tgz"
tar czf "$src_tgz" -C "$work/unpack" package
c=$(app no-compiler)
if (cd "$c" && PATH="$bare" npm install "${npm_flags[@]}" "$src_tgz" >"$c/install.log" 2>&1); then
  notok "an install with neither a prebuild nor a compiler fails"
else
  grep -q "iomux: no prebuild fits: looked for prebuilds/$platform/" "$c/install.log" &&
    ok "it says what it looked for: $(grep -o 'iomux: no prebuild fits.*' "$c/install.log" | head -1 | cut -c1-200)" ||
    notok "the failed install says which prebuild it looked for"
  grep -q "iomux: the build from source failed" "$c/install.log" &&
    ok "it says the build from source failed and what it needs" ||
    notok "the failed install says what a build from source needs"
fi

echo "# 4. without prebuilds, compiler on PATH: built from source"
s=$(app from-source)
if (cd "$s" && npm install "${npm_flags[@]}" "$src_tgz" >"$s/install.log" 2>&1); then
  ok "npm install of the tarball without prebuilds"
  [ -f "$s/node_modules/iomux/build/Release/iomux.node" ] &&
    ok "it built build/Release/iomux.node from source" || notok "it built build/Release/iomux.node from source"
  smoke "$s" "node $(node -v), built from source"
else
  tail -20 "$s/install.log"; notok "npm install of the tarball without prebuilds"
fi

echo "# install checks: $failures failed"
[ "$failures" = 0 ]
