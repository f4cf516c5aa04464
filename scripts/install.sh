#!/usr/bin/env bash
# Installs kmsfs where mount(8), mount.fuse3, systemd and autofs find it:
#   $PREFIX/bin/kmsfs            the binary (also `-t fuse.kmsfs` via mount.fuse3)
#   $SBINDIR/mount.kmsfs         the mount(8) helper for `-t kmsfs`
# and fuse3 (fusermount3, mount.fuse3) if missing.
#
#   scripts/install.sh               # build (release) and install
#   scripts/install.sh --uninstall   # remove both
# Environment: PREFIX (/usr/local), SBINDIR (/usr/sbin), KMSFS_SRC_BIN (a
# built binary to install instead of building).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-/usr/sbin}
if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$PREFIX/bin/kmsfs" "$SBINDIR/mount.kmsfs"
  echo "removed $PREFIX/bin/kmsfs and $SBINDIR/mount.kmsfs"
  exit 0
fi
if ! command -v fusermount3 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi
BIN=${KMSFS_SRC_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked -q
  BIN=target/release/kmsfs
fi
install -D -m 0755 "$BIN" "$PREFIX/bin/kmsfs"
sed "s|/usr/local/bin/kmsfs|$PREFIX/bin/kmsfs|" mount-helpers/mount.kmsfs > "$SBINDIR/mount.kmsfs.tmp"
chmod 0755 "$SBINDIR/mount.kmsfs.tmp"
mv "$SBINDIR/mount.kmsfs.tmp" "$SBINDIR/mount.kmsfs"
echo "installed $PREFIX/bin/kmsfs and $SBINDIR/mount.kmsfs"
