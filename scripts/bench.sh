#!/usr/bin/env bash
# Streaming throughput of kmsfs against gocryptfs, measured in the same run,
# both backed by tmpfs so the disk is not what is measured. Not part of CI.
#
#   scripts/bench.sh            # 1 GiB; SIZE_MB=256 scripts/bench.sh for a quick run
#
# Prints MB/s for `dd bs=1M` write and cold read (after a remount, so no
# page cache) through an ENCR_ pool and through gocryptfs, and the ratios.
# Then the dedup bench: SIZE_MB of random data into an encrypted LSU with
# cp, then a second version with three 100-byte insertions; MB/s and bytes
# stored after each, against `restic backup` of the same files in the same
# run; and a cold read of the first image.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
export DEBIAN_FRONTEND=noninteractive
for t in fusermount3:fuse3 gocryptfs:gocryptfs bc:bc restic:restic; do
  command -v "${t%%:*}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${t##*:}" >/dev/null; }
done
cargo build --release --locked -q
K=$PWD/target/release/kmsfs
W=$(mktemp -d /dev/shm/kmsfs-bench.XXXXXX)
cleanup() {
  for m in "$W/kmnt" "$W/gmnt" "$W/dmnt"; do mountpoint -q "$m" && umount "$m" || true; done
  rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
mbps() { echo "scale=0; $SIZE_MB / ($2 - $1)" | bc; }
# dd through the mount: prints MB/s
write_test() { local s e; s=$(now); dd if=/dev/zero of="$1" bs=1M count="$SIZE_MB" status=none; e=$(now); mbps "$s" "$e"; }
read_test() { local s e; s=$(now); dd if="$1" of=/dev/null bs=1M status=none; e=$(now); mbps "$s" "$e"; }

# This VM maps guest memory lazily: first-touched pages are slow. Touch
# what the runs will use once, so neither side pays for it alone.
dd if=/dev/zero of="$W/warm" bs=1M count=$((SIZE_MB * 4)) status=none; rm "$W/warm"

# kmsfs
$K init "$W/store" --volume-capacity 16G >/dev/null
$K --store "$W/store" kms createkg ENCR_Bench >/dev/null
$K --store "$W/store" kms createkey --kg ENCR_Bench --name k --activate >/dev/null
mkdir "$W/kmnt"
$K mount "$W/store" "$W/kmnt"
mkdir "$W/kmnt/pools/ENCR_Bench"
kw=$(write_test "$W/kmnt/pools/ENCR_Bench/img")
umount "$W/kmnt"; $K mount "$W/store" "$W/kmnt"
kr=$(read_test "$W/kmnt/pools/ENCR_Bench/img")
umount "$W/kmnt"

# gocryptfs, same data, same tmpfs
mkdir "$W/gcipher" "$W/gmnt"
echo bench > "$W/gpass"
gocryptfs -q -init -scryptn 10 -passfile "$W/gpass" "$W/gcipher" >/dev/null
gocryptfs -q -passfile "$W/gpass" "$W/gcipher" "$W/gmnt"
gw=$(write_test "$W/gmnt/img")
umount "$W/gmnt"; gocryptfs -q -passfile "$W/gpass" "$W/gcipher" "$W/gmnt"
gr=$(read_test "$W/gmnt/img")
umount "$W/gmnt"

printf '%-28s %10s %10s\n' "${SIZE_MB} MiB, tmpfs-backed" "write MB/s" "read MB/s"
printf '%-28s %10s %10s\n' "kmsfs (ENCR_ pool)" "$kw" "$kr"
printf '%-28s %10s %10s\n' "gocryptfs $(gocryptfs -version | awk '{print $2}' | head -1)" "$gw" "$gr"
printf '%-28s %10s %10s\n' "ratio kmsfs / gocryptfs" "$(echo "scale=2; $kw / $gw" | bc)" "$(echo "scale=2; $kr / $gr" | bc)"

# Dedup: kmsfs LSU (KMS mode) against restic, same files, same tmpfs.
head -c "${SIZE_MB}M" /dev/urandom > "$W/v1"
Q=$((SIZE_MB * 1048576 / 4))
part() { dd if="$W/v1" iflag=skip_bytes,count_bytes skip="$1" count="$2" bs=1M status=none; }
ins() { head -c 100 /dev/urandom; }
(part 0 $Q; ins; part $Q $Q; ins; part $((2 * Q)) $Q; ins; part $((3 * Q)) $((SIZE_MB * 1048576 - 3 * Q))) > "$W/v2"
bytes() { du -sb "$1" | cut -f1; }
# Caches dropped before each timed step: the page cache left by one side
# must not slow the other (this VM reclaims and refaults memory slowly).
settle() { sync; echo 3 > /proc/sys/vm/drop_caches; cat "$1" > /dev/null; }
copy_test() { local s e; settle "$1"; s=$(now); cp "$1" "$2"; e=$(now); mbps "$s" "$e"; }
backup_test() { local s e; settle "$W/rsrc/data"; s=$(now); restic backup -q "$W/rsrc" >/dev/null; e=$(now); mbps "$s" "$e"; }
$K --store "$W/store" kms createkg KG >/dev/null
$K --store "$W/store" kms createkey --kg KG --name root --activate >/dev/null
$K --store "$W/store" lsu create bench --kms --key-group KG >/dev/null
mkdir "$W/dmnt"; $K mount "$W/store" "$W/dmnt"
l0=$(bytes "$W/store/lsu")
d1=$(copy_test "$W/v1" "$W/dmnt/msdp/bench/v1"); l1=$(( $(bytes "$W/store/lsu") - l0 ))
d2=$(copy_test "$W/v2" "$W/dmnt/msdp/bench/v2"); l2=$(( $(bytes "$W/store/lsu") - l0 ))
umount "$W/dmnt"; sync; echo 3 > /proc/sys/vm/drop_caches; $K mount "$W/store" "$W/dmnt"
dr=$(read_test "$W/dmnt/msdp/bench/v1")
rss=$(grep VmHWM "/proc/$(cat "$W/store/kmsfs.pid")/status" | awk '{print $2}')
cmp "$W/v1" "$W/dmnt/msdp/bench/v1"
umount "$W/dmnt"

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic"
restic init -q >/dev/null
mkdir "$W/rsrc"; cp "$W/v1" "$W/rsrc/data"
r0=$(bytes "$W/restic")
r1m=$(backup_test); r1=$(( $(bytes "$W/restic") - r0 ))
cp "$W/v2" "$W/rsrc/data"
r2m=$(backup_test); r2=$(( $(bytes "$W/restic") - r0 ))

echo
printf '%-28s %12s %14s %12s %14s %10s\n' "dedup, ${SIZE_MB} MiB" "v1 MB/s" "stored after v1" "v2 MB/s" "added by v2" "read MB/s"
printf '%-28s %12s %14s %12s %14s %10s\n' "kmsfs LSU (KMS mode)" "$d1" "$l1" "$d2" "$((l2 - l1))" "$dr"
printf '%-28s %12s %14s %12s %14s %10s\n' "restic $(restic version | awk '{print $2}')" "$r1m" "$r1" "$r2m" "$((r2 - r1))" "-"
printf '%-28s %12s\n' "ratio kmsfs / restic" "$(echo "scale=2; $d1 / $r1m" | bc)"
echo "kmsfs daemon peak RSS after ingest and read: ${rss} kB"
