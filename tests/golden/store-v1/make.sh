#!/usr/bin/env bash
# Made tests/golden/store-v1/store once, with kmsfs at commit d27468c (volume
# format 1, catalog format 2, keystore format 1, LSU container format 1). Kept
# for the record: a store written then must stay readable by every later
# kmsfs (tests/golden_store.rs). Run as root: it mounts.
set -euo pipefail
K=${K:-target/release/kmsfs}
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
# Plain patterns, so the test can recreate them: byte i of file n is (i*31+7)%251 ^ n.
gen() { python3 -c "import sys; n,l=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes(((i*31+7)%251)^n for i in range(l)))" "$1" "$2"; }
$K init "$work/store" --volume-capacity 1M >/dev/null
export KMSFS_STORE=$work/store
printf 'golden store pass phrase v1' > "$work/pp"
$K kms createkg ENCR_Golden >/dev/null
$K kms createkey --kg ENCR_Golden --name g --pass-phrase-file "$work/pp" --activate >/dev/null
$K lsu create lsu1 --kms --key-group ENCR_Golden >/dev/null
mkdir "$work/mnt"
$K mount "$work/store" "$work/mnt"
mkdir -p "$work/mnt/pools/ENCR_Golden/web01" "$work/mnt/pools/Clear"
gen 1 1000 > "$work/mnt/pools/ENCR_Golden/small.bin"
gen 2 1500000 > "$work/mnt/pools/ENCR_Golden/web01/span.bin"
gen 3 10000 > "$work/mnt/pools/Clear/clear.bin"
gen 4 700000 > "$work/mnt/msdp/lsu1/dedup.bin"
gen 4 700000 > "$work/mnt/msdp/lsu1/copy.bin"
umount "$work/mnt"
sleep 1
rm -f "$work/store/kmsfs.log" "$work/store/lock"
rm -rf "$out/store"
cp -a "$work/store" "$out/store"
du -sh "$out/store"
