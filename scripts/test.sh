#!/usr/bin/env bash
# Runs every test of kmsfs: unit, golden-vector and property tests, and the
# integration tests that mount the real binary with FUSE and drive it with
# cp, tar, rsync, dd and sha256sum. Installs what a fresh machine lacks;
# the KMIP tests make a virtualenv with PyKMIP (from PyPI) under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/bin/python3 ] || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v openssl >/dev/null || need+=(openssl)
command -v sha256sum >/dev/null || need+=(coreutils)
command -v automount >/dev/null || need+=(autofs)
command -v strace >/dev/null || need+=(strace)
command -v setpriv >/dev/null || need+=(util-linux)
command -v setfattr >/dev/null || need+=(attr)
command -v setfacl >/dev/null || need+=(acl)
command -v tar >/dev/null || need+=(tar)
[ -x /lib/systemd/system-generators/systemd-fstab-generator ] || need+=(systemd)
[ -e /dev/fuse ] || { echo "test.sh: /dev/fuse is missing: FUSE tests cannot run here" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Release build: the integration tests move GiBs through FUSE.
# The failpoints feature arms the crash-model faults (tests/crash_model.rs);
# they stay inert unless KMSFS_FAILPOINTS is set, and a release build has none.
exec cargo test --release --locked --features failpoints "$@"
