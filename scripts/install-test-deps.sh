#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian/Ubuntu machine: the C compiler
# that builds the shim, the real programs the tests run under `ferry run`, the build tools
# of the corpus (tests/test_corpus.py), clang for the shim's fuzz target (tests/test_fuzz_shim.py),
# and then the corpus itself (scripts/fetch-corpus.sh).
set -euo pipefail
need=()
for tool in gcc make tar gzip find diff strace getfattr rsync sqlite3 git flock bash dash zsh busybox perl \
    autoconf automake libtoolize autopoint makeinfo m4 cmake node npm clang; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# tests/test_real_programs.py makes a venv with the python3 in PATH
python3 -c "import venv" >/dev/null 2>&1 || need+=(python3-venv)
# the corpus builds a C extension with the python3 in PATH
python3 -c "import os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')" \
  >/dev/null 2>&1 || need+=(python3-dev)
# tests/test_stdio_routes.py links a static binary (glibc's libc.a)
[ -n "$(gcc -print-file-name=libc.a 2>/dev/null | grep /)" ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for tool in "${need[@]}"; do
    case "$tool" in
      find) pkgs+=(findutils) ;;
      diff) pkgs+=(diffutils) ;;
      getfattr) pkgs+=(attr) ;;
      flock) pkgs+=(util-linux) ;;
      libtoolize) pkgs+=(libtool) ;;
      makeinfo) pkgs+=(texinfo) ;;
      node) pkgs+=(nodejs) ;;
      *) pkgs+=("$tool") ;;
    esac
  done
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
# the corpus: projects and tools from the package registries, kept in a cache dir
bash "$(dirname "$0")/fetch-corpus.sh"
