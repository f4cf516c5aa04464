#!/usr/bin/env bash
# Builds and installs kmsfs (scripts/install.sh: the binary on the PATH, the
# mount helper, man pages, completions), creates a store on the embedded KMS
# if it is absent (with a key group ENCR_Demo and an active key, so ENCR_
# pools work at once), and mounts it.
# Usage: scripts/mount-demo.sh [STORE] [MOUNTPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-/var/lib/kmsfs/demo}
MNT=${2:-/mnt/kmsfs}
scripts/install.sh
K=${PREFIX:-/usr/local}/bin/kmsfs
if [ ! -e "$STORE/kmsfs.conf" ]; then
  mkdir -p "$(dirname "$STORE")"
  $K init "$STORE"
  $K --store "$STORE" kms createkg ENCR_Demo --description "demo key group"
  $K --store "$STORE" kms createkey --key-group ENCR_Demo --name demo-key-1 --activate
  $K --store "$STORE" lsu create demo --kms --key-group ENCR_Demo
fi
mkdir -p "$MNT"
if grep -q " $MNT fuse.kmsfs " /proc/mounts; then
  echo "$MNT is already mounted"
else
  $K mount "$STORE" "$MNT"
fi
mkdir -p "$MNT/pools/ENCR_Demo"
echo "mounted $STORE on $MNT: try  cp /etc/os-release $MNT/pools/ENCR_Demo/ && cat $MNT/drives/drive0/status"
echo "deduplicating, envelope-encrypted LSU: cp /etc/os-release $MNT/msdp/demo/ && $K --store $STORE lsu keydict demo"
echo "what it holds: $K --store $STORE status     manual: man kmsfs     unmount: umount $MNT"
