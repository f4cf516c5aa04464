#!/usr/bin/env bash
# The concurrency torture run (tests/torture.rs) for as long as you like:
#   scripts/torture.sh --minutes 30 --seed 42
# Writers and readers on tape pools and LSUs of one mount, with KEK
# rotation, rewraps, conversion, gc, key state changes, deletes, fsck,
# remounts and SIGKILLs, checked against a reference copy of every image
# and at the end after a cold remount. The seed is printed; the same seed
# makes the same choices. scripts/test.sh runs a short form (100 s).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=2
seed=$(date +%s)
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "torture.sh: unknown argument $1 (--minutes N --seed S)" >&2; exit 2 ;;
  esac
done
export KMSFS_TORTURE_SECS=$((minutes * 60)) KMSFS_TORTURE_SEED=$seed
exec scripts/test.sh --test torture -- --nocapture
