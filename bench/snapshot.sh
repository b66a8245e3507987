#!/usr/bin/env bash
# Benchmark: `bkp snapshot`, `bkp restore` and `bkp verify` of a TigerBeetle data file with real
# contents, to S3 on a local SeaweedFS server, next to the baseline
# `tar | zstd -T0 | rclone rcat` of the same file into the same bucket.
#
# Prints MB/s, wall time and peak RSS for each, and writes them to
# bench/snapshot-results.md. Not a test: figures depend on the machine.
#
#   bench/snapshot.sh                 # 2,000,000 transfers
#   TRANSFERS=10000000 RESULTS=bench/snapshot-large-results.md bench/snapshot.sh   # ~20 GB
#   DATA_CACHE=/var/tmp/bkp-bench BKP_BIN=/path/to/bkp bench/snapshot.sh
#   FORMAT=chunked bench/snapshot.sh  # chunked snapshots (default here: archive; compare.sh times chunked)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
tb="$BKP_TOOLS/bin/tigerbeetle"
transfers="${TRANSFERS:-2000000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench.XXXXXX")"
source "$BKP_ROOT/bench/lib.sh"

echo "==> building a data file with $transfers transfers (tigerbeetle benchmark, through the client)"
data="$work/data/0_0.tigerbeetle"
data_file "$data" "$transfers"
size=$(stat -c %s "$data")
echo "    data file: $size bytes"

echo "==> starting SeaweedFS"
start_seaweedfs

head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
cat > "$work/bkp.toml" <<TOML
work_dir = "work"
[store]
type = "s3"
bucket = "bench"
prefix = "bkp"
endpoint = "http://127.0.0.1:$s3_port"
path_style = true
[encryption]
key_file = "key"
[tigerbeetle]
data_file = "data/0_0.tigerbeetle"
snapshot_format = "${FORMAT:-archive}"
TOML

measure() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r secs rss < "$work/time"
  printf '| %-44s | %8.1f | %8.1f | %8d |\n' "$label" "$secs" "$(python3 -c "print($size/1e6/$secs)")" "$((rss / 1024))"
}

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
{
echo "Data file: $size bytes ($transfers transfers, 10,000 accounts); $(nproc) cores; $(date -u +%Y-%m-%d); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run                                          | wall (s) | MB/s     | RSS (MiB)|"
echo "|----------------------------------------------|----------|----------|----------|"
measure "bkp snapshot (zstd 3, AES-256-GCM, S3)" "$bkp" --config "$work/bkp.toml" snapshot
stored=$(rclone lsjson -R s3:bench/bkp/tigerbeetle | python3 -c 'import json,sys; print(sum(o["Size"] for o in json.load(sys.stdin) if not o["IsDir"]))')
measure "tar | zstd -T0 -3 | rclone rcat (no encryption)" bash -c "tar -C '$work/data' -cf - 0_0.tigerbeetle | zstd -q -T0 -3 | rclone rcat s3:bench/baseline.tar.zst"
base=$(rclone lsjson s3:bench/baseline.tar.zst | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])')
measure "bkp restore (S3, verify, decrypt, unpack)" "$bkp" --config "$work/bkp.toml" restore latest --target "$work/restored"
# Compared at once and removed: a large file's restores are not all held on
# the disk together.
same=no; cmp -s "$data" "$work/restored/0_0.tigerbeetle" && same=yes
rm -rf "$work/restored"
sed 's/^path_style = true$/path_style = true\nconcurrency = 1/' "$work/bkp.toml" > "$work/bkp-1.toml"
measure "bkp restore, one GET stream (concurrency 1)" "$bkp" --config "$work/bkp-1.toml" restore latest --target "$work/restored-1"
rm -rf "$work/restored-1"
measure "bkp verify (S3: SHA-256, authenticate, decompress)" "$bkp" --config "$work/bkp.toml" verify
measure "rclone cat | zstd -d | tar -x" bash -c "mkdir -p '$work/base-restored' && rclone cat s3:bench/baseline.tar.zst | zstd -q -d | tar -C '$work/base-restored' -xf -"
rm -rf "$work/base-restored"
echo
echo "Stored: bkp $stored bytes ($(python3 -c "print(round(100*$stored/$size,2))")% of the data file), baseline $base bytes."
[ "$same" = yes ] && echo "Restored file is byte-identical." || echo "RESTORED FILE DIFFERS."
} | tee "$work/results.md"
cp "$work/results.md" "${RESULTS:-$BKP_ROOT/bench/snapshot-results.md}"
