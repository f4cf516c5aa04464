#!/usr/bin/env bash
# Installs kmsfs where mount(8), mount.fuse3, systemd, autofs, man(1) and
# the shells find it:
#   $PREFIX/bin/kmsfs                                  the binary (also `-t fuse.kmsfs` via mount.fuse3)
#   $SBINDIR/mount.kmsfs                               the mount(8) helper for `-t kmsfs`
#   $PREFIX/share/man/man1/kmsfs.1, kmsfs-*.1          manual pages (`man kmsfs`, `man kmsfs-mount`)
#   $PREFIX/share/bash-completion/completions/kmsfs    bash completion
#   $PREFIX/share/zsh/site-functions/_kmsfs            zsh completion
#   $PREFIX/share/fish/vendor_completions.d/kmsfs.fish fish completion
# and fuse3 (fusermount3, mount.fuse3) if missing.
#
#   scripts/install.sh               # build (release) and install
#   scripts/install.sh --uninstall   # remove all of it
# Environment: PREFIX (/usr/local), SBINDIR (/usr/sbin), KMSFS_SRC_BIN (a
# built binary to install instead of building).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-/usr/sbin}
MAN1=$PREFIX/share/man/man1
BASH_DIR=$PREFIX/share/bash-completion/completions
ZSH_DIR=$PREFIX/share/zsh/site-functions
FISH_DIR=$PREFIX/share/fish/vendor_completions.d
if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$PREFIX/bin/kmsfs" "$SBINDIR/mount.kmsfs" "$MAN1"/kmsfs.1 "$MAN1"/kmsfs-*.1 \
    "$BASH_DIR/kmsfs" "$ZSH_DIR/_kmsfs" "$FISH_DIR/kmsfs.fish"
  echo "removed kmsfs, mount.kmsfs, its manual pages and completions"
  exit 0
fi
if ! command -v fusermount3 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi
BIN=${KMSFS_SRC_BIN:-}
if [ -z "$BIN" ]; then
  echo "building kmsfs (release; a few minutes the first time)..."
  cargo build --release --locked
  BIN=target/release/kmsfs
fi
install -D -m 0755 "$BIN" "$PREFIX/bin/kmsfs"
sed "s|/usr/local/bin/kmsfs|$PREFIX/bin/kmsfs|" mount-helpers/mount.kmsfs > "$SBINDIR/mount.kmsfs.tmp"
chmod 0755 "$SBINDIR/mount.kmsfs.tmp"
mv "$SBINDIR/mount.kmsfs.tmp" "$SBINDIR/mount.kmsfs"
mkdir -p "$MAN1" "$BASH_DIR" "$ZSH_DIR" "$FISH_DIR"
"$BIN" man --out-dir "$MAN1"
"$BIN" completions bash > "$BASH_DIR/kmsfs"
"$BIN" completions zsh > "$ZSH_DIR/_kmsfs"
"$BIN" completions fish > "$FISH_DIR/kmsfs.fish"
echo "installed $PREFIX/bin/kmsfs, $SBINDIR/mount.kmsfs, man pages in $MAN1 and bash, zsh and fish completions"
