#!/usr/bin/env bash
# Streaming throughput of kmsfs against gocryptfs, measured in the same run,
# both backed by tmpfs so the disk is not what is measured. Not part of CI.
#
#   scripts/bench.sh            # 1 GiB; SIZE_MB=256 scripts/bench.sh for a quick run
#
# Prints MB/s for `dd bs=1M` write and cold read (after a remount, so no
# page cache) through an ENCR_ pool and through gocryptfs, and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
export DEBIAN_FRONTEND=noninteractive
for t in fusermount3:fuse3 gocryptfs:gocryptfs bc:bc; do
  command -v "${t%%:*}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${t##*:}" >/dev/null; }
done
cargo build --release --locked -q
K=$PWD/target/release/kmsfs
W=$(mktemp -d /dev/shm/kmsfs-bench.XXXXXX)
cleanup() {
  for m in "$W/kmnt" "$W/gmnt"; do mountpoint -q "$m" && umount "$m" || true; done
  rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
mbps() { echo "scale=0; $SIZE_MB / ($2 - $1)" | bc; }
# dd through the mount: prints MB/s
write_test() { local s e; s=$(now); dd if=/dev/zero of="$1" bs=1M count="$SIZE_MB" status=none; e=$(now); mbps "$s" "$e"; }
read_test() { local s e; s=$(now); dd if="$1" of=/dev/null bs=1M status=none; e=$(now); mbps "$s" "$e"; }

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
