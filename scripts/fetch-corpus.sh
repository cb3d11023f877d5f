#!/usr/bin/env bash
# Fetches the corpus that tests/test_corpus.py builds and runs on ferry paths: real projects
# and tools made elsewhere, from the package registries only (Debian source packages, PyPI
# sdists and wheels, npm tarballs). The tests never touch the network: they read this cache.
#
#   ${FERRY_CORPUS_DIR:-$HOME/.cache/ferry/corpus}/
#     debian/hello/   GNU hello (autotools)           apt-get source --download-only hello
#     debian/cjson/   cJSON (CMake)                   apt-get source --download-only cjson
#     pypi/           markupsafe sdist (C extension), more-itertools sdist (pure Python, tests),
#                     setuptools and wheel wheels (to build offline in a venv)
#     npm/project/    package.json + package-lock.json of a small tree with .bin tools
#     npm/cache/      the npm cache that `npm ci --offline --cache` installs it from
#
# Idempotent: an item whose `.done` marker exists is skipped.
set -euo pipefail
CORPUS="${FERRY_CORPUS_DIR:-$HOME/.cache/ferry/corpus}"
mkdir -p "$CORPUS"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

done_or() {  # done_or DIR: true when DIR was fetched completely before
  [ -e "$1/.done" ]
}

# ---------------------------------------------------------------- Debian source packages
deb_src_ready() { apt-cache showsrc hello 2>/dev/null | grep -q '^Package: hello'; }
fetch_deb_src() {  # fetch_deb_src PACKAGE
  local d="$CORPUS/debian/$1"
  done_or "$d" && return 0
  if ! deb_src_ready; then
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
      # the binary sources this machine uses, as deb-src
      if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
          | $SUDO tee /etc/apt/sources.list.d/ferry-deb-src.sources >/dev/null
      else
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
          | $SUDO tee /etc/apt/sources.list.d/ferry-deb-src.list >/dev/null
      fi
    fi
    $SUDO apt-get update -qq
  fi
  rm -rf "$d" && mkdir -p "$d"
  (cd "$d" && apt-get source --download-only -qq "$1" 2>&1 | grep -v 'unsandboxed as root' || true)
  ls "$d"/"$1"_*.orig.tar.* >/dev/null
  touch "$d/.done"
}
fetch_deb_src hello
fetch_deb_src cjson

# ---------------------------------------------------------------- PyPI
d="$CORPUS/pypi"
if ! done_or "$d"; then
  rm -rf "$d" && mkdir -p "$d"
  python3 -m pip download -q --no-deps --no-binary :all: -d "$d" markupsafe==3.0.2 more-itertools==10.5.0
  python3 -m pip download -q --no-deps --only-binary :all: -d "$d" setuptools==75.8.0 wheel==0.45.1
  touch "$d/.done"
fi

# ---------------------------------------------------------------- npm
d="$CORPUS/npm"
if ! done_or "$d"; then
  rm -rf "$d" && mkdir -p "$d/project"
  cat >"$d/project/package.json" <<'EOF'
{"name": "corpus-npm", "version": "1.0.0", "private": true,
 "dependencies": {"semver": "7.6.3", "which": "4.0.0", "json5": "2.2.3", "rimraf": "3.0.2"}}
EOF
  # the lock file keeps each tarball's address, so `npm ci --offline` needs no packument
  (cd "$d/project" && npm install -s --no-audit --no-fund --omit-lockfile-registry-resolved=false \
      --cache "$d/cache" && rm -rf node_modules)
  # check it installs offline from the cache alone
  tmp="$(mktemp -d)" && cp "$d/project/package.json" "$d/project/package-lock.json" "$tmp/"
  (cd "$tmp" && npm ci -s --offline --no-audit --no-fund --cache "$d/cache" && ./node_modules/.bin/semver 1.0.0 >/dev/null)
  rm -rf "$tmp"
  touch "$d/.done"
fi
echo "corpus in $CORPUS"
