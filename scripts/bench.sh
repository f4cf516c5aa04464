#!/usr/bin/env bash
# The paired benchmark: kmsfs against gocryptfs, restic and borg, with the
# machine's ceilings (native tmpfs, and examples/nullfs.rs) measured in the
# same run. Not part of CI; never run it beside the tests or another benchmark.
#
#   scripts/bench.sh                          # 1 GiB files, 5 pairs
#   SIZE_MB=4096 PAIRS=7 scripts/bench.sh     # 4 GiB files (peak RSS of a 4 GiB restore)
#   ONLY=tape SIZE_MB=256 scripts/bench.sh    # aead, tape, lsu, dedup, rss: which parts
#   ONLY=cloud scripts/bench.sh               # a cloud LSU on moto against a local LSU
#
# What it measures and how: scripts/bench.py and docs/benchmark.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
for t in fusermount3:fuse3 gocryptfs:gocryptfs restic:restic borg:borgbackup; do
  command -v "${t%%:*}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${t##*:}" >/dev/null; }
done
if [[ ",${ONLY:-}," == *,cloud,* ]] && [ ! -e target/moto-venv/.ready ]; then
  rm -rf target/moto-venv
  python3 -m venv target/moto-venv
  target/moto-venv/bin/pip install -q --disable-pip-version-check -r tests/s3/requirements.txt
  touch target/moto-venv/.ready
fi
cargo build --release --locked -q --bin kmsfs --example nullfs --example aead_speed
R=$PWD/target/release
KMSFS=$R/kmsfs NULLFS=$R/examples/nullfs AEAD=$R/examples/aead_speed exec python3 scripts/bench.py
