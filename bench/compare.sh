#!/usr/bin/env bash
# Benchmark: bkp side by side with the two ways an operator would otherwise back up a
# TigerBeetle data file, on the same data file and the same S3 server (SeaweedFS on
# loopback), runs interleaved:
#   - the shell pipeline `tar | zstd -3 -T0 | age | rclone rcat` (and back:
#     `rclone cat | age -d | zstd -d | tar -x`),
#   - restic (Debian's), into an S3 repository.
# Each is timed on a first snapshot, a second snapshot after about 1% new
# transfers, and a restore; wall time, peak RSS and bytes stored are recorded.
# bkp and the pipeline take both snapshots again with the file out of the page
# cache, as TigerBeetle (which writes with O_DIRECT) leaves it. Then
# bkp's peak RSS on a 1 GiB and an 8 GiB input. Writes bench/compare-results.md.
# Not a test: figures depend on the machine and on what else runs on it (the load
# average at the start is recorded with them).
#
#   bench/compare.sh                      # 2,000,000 transfers (4.1 GB), 2 repeats
#   REPEAT=3 TRANSFERS=4000000 bench/compare.sh
#   DATA_CACHE=/var/tmp/bkp-bench bench/compare.sh   # keep the generated file
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
tb="$BKP_TOOLS/bin/tigerbeetle"
transfers="${TRANSFERS:-2000000}"
repeat="${REPEAT:-2}"

# restic and age from Debian, as an operator would have them.
need=()
for p in restic age; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/var/tmp}/bkp-compare.XXXXXX")"
source "$BKP_ROOT/bench/lib.sh"

echo "==> the data file: $transfers transfers (tigerbeetle benchmark, through the client)"
mkdir -p "$work/v1" "$work/v2"
first="$work/v1/0_0.tigerbeetle"
data_file "$first" "$transfers"
size=$(stat -c %s "$first")
echo "==> the same file after 1% more transfers (a replica started on a copy)"
second="$work/v2/0_0.tigerbeetle"
cp "$first" "$second"
port=$(freeport)
"$tb" start --addresses="127.0.0.1:$port" --cache-grid=256MiB "$second" >"$work/replica.log" 2>&1 &
rpid=$!; pids+=("$rpid")
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
"$tb" benchmark --addresses="127.0.0.1:$port" --account-count=100 --transfer-count=$((transfers / 100)) \
  --id-order=random --seed=7 >"$work/tb-bench2.log" 2>&1
kill "$rpid"; wait "$rpid" 2>/dev/null || true
changed=$( { cmp -l "$first" "$second" || true; } | wc -l)
echo "    $changed bytes differ"

echo "==> starting SeaweedFS"
start_seaweedfs
weed_pid=${pids[-1]}

# Secrets: bkp's key, age's identity, restic's password.
head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
age-keygen -o "$work/age.key" 2>/dev/null
recipient=$(age-keygen -y "$work/age.key")
export RESTIC_PASSWORD="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

bkp_config() { # prefix, data file[, zstd level]
  cat <<TOML
work_dir = "$work/bkp-work"
[store]
type = "s3"
bucket = "bench"
prefix = "$1"
endpoint = "http://127.0.0.1:$s3_port"
path_style = true
[encryption]
key_file = "$work/key"
[tigerbeetle]
data_file = "$2"
TOML
  [ -z "${3:-}" ] || printf '[compression]\nlevel = %s\n' "$3"
}

# Drops a file from the page cache, as TigerBeetle leaves its data file (it
# writes with O_DIRECT).
evict() { dd if="$1" iflag=nocache count=0 status=none; }

bytes_under() { rclone size --json "s3:bench/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])'; }

# time one command: prints "wall rss_mib"
timed() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss < "$work/time"
  echo "$secs $((rss / 1024))"
}

rows="$work/rows"; : > "$rows"
row() { # tool, step, run, "wall rss", bytes
  printf '| %-9s | %-16s | %3s | %8s | %8s | %14s |\n' "$1" "$2" "$3" "${4% *}" "${4#* }" "$5" | tee -a "$rows"
}

load0="$(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$repeat"); do
  echo "==> run $run of $repeat"
  # bkp
  for v in v1 v2; do bkp_config "bkp$run" "$work/$v/0_0.tigerbeetle" > "$work/bkp-$v.toml"; done
  t=$(timed "$bkp" --config "$work/bkp-v1.toml" snapshot); b1=$(bytes_under "bkp$run/tigerbeetle")
  row bkp "first snapshot" "$run" "$t" "$b1"
  t=$(timed "$bkp" --config "$work/bkp-v2.toml" snapshot); b2=$(bytes_under "bkp$run/tigerbeetle")
  row bkp "second snapshot" "$run" "$t" "$((b2 - b1))"
  # The same first snapshot at zstd level 1: what compression's CPU costs.
  bkp_config "bkpl1-$run" "$first" 1 > "$work/bkp-l1.toml"
  t=$(timed "$bkp" --config "$work/bkp-l1.toml" snapshot)
  row bkp "first, zstd 1" "$run" "$t" "$(bytes_under "bkpl1-$run/tigerbeetle")"
  # Both snapshots again, each file out of the page cache first.
  for v in v1 v2; do bkp_config "bkpnc$run" "$work/$v/0_0.tigerbeetle" > "$work/bkp-nc-$v.toml"; done
  evict "$first"; t=$(timed "$bkp" --config "$work/bkp-nc-v1.toml" snapshot)
  n1=$(bytes_under "bkpnc$run/tigerbeetle"); row bkp "first, uncached" "$run" "$t" "$n1"
  evict "$second"; t=$(timed "$bkp" --config "$work/bkp-nc-v2.toml" snapshot)
  n2=$(bytes_under "bkpnc$run/tigerbeetle"); row bkp "second, uncached" "$run" "$t" "$((n2 - n1))"
  cat "$first" "$second" > /dev/null  # cached again for the runs that follow
  rm -rf "$work/restored"; sync  # each restore starts with nothing left to write out
  t=$(timed "$bkp" --config "$work/bkp-v2.toml" restore latest --target "$work/restored")
  cmp -s "$second" "$work/restored/0_0.tigerbeetle" || { echo "bkp restored other bytes" >&2; exit 1; }
  row bkp "restore" "$run" "$t" ""

  # the shell pipeline
  pipe() { # dir, object
    tar -C "$1" -cf - 0_0.tigerbeetle | zstd -q -3 -T0 | age -r "$recipient" | rclone rcat "s3:bench/pipe$run/$2"
  }
  t=$(timed bash -c "set -o pipefail; $(declare -f pipe); recipient=$recipient run=$run; pipe '$work/v1' first.tar.zst.age")
  b1=$(bytes_under "pipe$run")
  row pipeline "first snapshot" "$run" "$t" "$b1"
  t=$(timed bash -c "set -o pipefail; $(declare -f pipe); recipient=$recipient run=$run; pipe '$work/v2' second.tar.zst.age")
  b2=$(bytes_under "pipe$run")
  row pipeline "second snapshot" "$run" "$t" "$((b2 - b1))"
  evict "$first"
  t=$(timed bash -c "set -o pipefail; $(declare -f pipe); recipient=$recipient run=$run; pipe '$work/v1' first-nc.tar.zst.age")
  row pipeline "first, uncached" "$run" "$t" ""
  evict "$second"
  t=$(timed bash -c "set -o pipefail; $(declare -f pipe); recipient=$recipient run=$run; pipe '$work/v2' second-nc.tar.zst.age")
  row pipeline "second, uncached" "$run" "$t" ""
  rm -rf "$work/restored"; mkdir -p "$work/restored"; sync
  t=$(timed bash -c "set -o pipefail; rclone cat s3:bench/pipe$run/second.tar.zst.age | age -d -i '$work/age.key' | zstd -q -d | tar -C '$work/restored' -xf -")
  cmp -s "$second" "$work/restored/0_0.tigerbeetle" || { echo "the pipeline restored other bytes" >&2; exit 1; }
  row pipeline "restore" "$run" "$t" ""

  # restic: a new repository per run, each snapshot of the directory holding the file
  export RESTIC_REPOSITORY="s3:http://127.0.0.1:$s3_port/bench/restic$run"
  restic init -q >/dev/null
  b0=$(bytes_under "restic$run")
  t=$(timed restic backup -q "$work/v1"); b1=$(bytes_under "restic$run")
  row restic "first snapshot" "$run" "$t" "$((b1 - b0))"
  t=$(timed restic backup -q "$work/v2"); b2=$(bytes_under "restic$run")
  row restic "second snapshot" "$run" "$t" "$((b2 - b1))"
  rm -rf "$work/restored"
  sync
  t=$(timed restic restore -q latest --path "$work/v2" --target "$work/restored")
  # bkp's restore ends with the file on disk (fsync); restic's with it in the
  # page cache: the time to write it out, taken at once, makes the two alike.
  s=$(timed sync -f "$work/restored/$work/v2/0_0.tigerbeetle")
  cmp -s "$second" "$work/restored/$work/v2/0_0.tigerbeetle" || { echo "restic restored other bytes" >&2; exit 1; }
  row restic "restore" "$run" "$t" ""
  row restic "restore, synced" "$run" "$(python3 -c "print(f'{${t% *} + ${s% *}:.2f}')") ${t#* }" ""
  rm -rf "$work/restored"
done

echo "==> zstd -3 -T0 alone on the same file"
zt=$(timed bash -c "zstd -q -3 -T0 -c '$first' > /dev/null")
echo "    $zt"

# Each stage alone, on the same file and server, to show which one bounds a
# figure that misses its target: seconds of wall time, and for the S3 server
# the CPU seconds it spent (it shares the machine's cores with the client).
echo "==> stages alone"
weed_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$weed_pid/stat"; }
stage_rows="$work/stages"; : > "$stage_rows"
stage() { # label, command...
  local label="$1"; shift
  local c0 t c1
  c0=$(weed_cpu); t=$(timed "$@"); c1=$(weed_cpu)
  printf '| %s | %s | %s |\n' "$label" "${t% *}" "$(python3 -c "print(f'{$c1 - $c0:.1f}')")" | tee -a "$stage_rows"
}
zstd -q -3 -T0 -c "$first" > "$work/first.zst"
stage "zstd -3 -T0 of the data file, to /dev/null" bash -c "zstd -q -3 -T0 -c '$first' > /dev/null"
stage "SHA-256 of the data file (openssl)" openssl dgst -sha256 "$first"
evict "$first"
stage "reading the data file from disk (dd iflag=direct bs=4M)" dd if="$first" of=/dev/null bs=4M iflag=direct status=none
stage "S3 upload of its zstd output (rclone rcat)" bash -c "rclone rcat s3:bench/stages/first.zst < '$work/first.zst'"
stage "S3 download of it (rclone cat, to /dev/null)" bash -c "rclone cat s3:bench/stages/first.zst > /dev/null"
stage "zstd -d of it, to /dev/null" bash -c "zstd -q -d -c '$work/first.zst' > /dev/null"
rm -rf "$work/copy"; mkdir -p "$work/copy"
stage "writing the data file (cp --sparse=always, then sync)" bash -c "cp --sparse=always '$first' '$work/copy/' && sync '$work/copy/0_0.tigerbeetle'"
rm -rf "$work/copy" "$work/first.zst"

echo "==> bkp's peak RSS on 1 GiB and 8 GiB inputs"
# Memory in flight follows how well the chunks in flight compress, not the
# input's length, so both inputs are made of the same data: the 1 GiB one is
# eight 128 MiB slices spread over the data file (the file's first GiB alone,
# its most compressible part, is measured too), the 8 GiB one is the file
# twice and the head of a third copy. Each is snapshotted twice into a prefix
# of its own; the higher peak counts.
mkdir -p "$work/rss"
slice=$((128 << 20)); step=$(( (size - slice) / 7 / 4096 * 4096 ))
for i in $(seq 0 7); do
  dd if="$first" bs=4096 skip=$((i * step / 4096)) count=$((slice / 4096)) status=none
done > "$work/rss/small"
head -c $((1 << 30)) "$first" > "$work/rss/head"
{ cat "$first" "$first"; head -c $(( (8 << 30) - 2 * size )) "$first"; } > "$work/rss/large"
peak() { # input name: the higher peak RSS (MiB) of two first snapshots
  local best=0 t
  for r in 1 2; do
    bkp_config "rss-$1-$r" "$work/rss/$1" > "$work/rss.toml"
    t=$(timed "$bkp" --config "$work/rss.toml" snapshot)
    [ "${t#* }" -gt "$best" ] && best=${t#* }
  done
  echo "$best"
}
rs="x $(peak small)"; rl="x $(peak large)"; rh=$(peak head)
rm -rf "$work/rss"

python3 - "$rows" "$zt" "$rs" "$rl" "$rh" "$size" "$changed" "$transfers" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$load0" "$stage_rows" <<'PY' | tee "$work/results.md"
import sys, collections
rows, zt, rs, rl, rh, size, changed, transfers, cores, load_end, load0, stage_rows = sys.argv[1:]
best = collections.defaultdict(lambda: None)
stored = {}
for line in open(rows):
    tool, step, run, wall, rss, b = [c.strip() for c in line.strip().strip('|').split('|')]
    key = (tool, step)
    w = float(wall)
    if best[key] is None or w < best[key][0]:
        best[key] = (w, int(rss))
    if b:
        stored.setdefault(key, int(b))
print(f"Data file: {int(size)} bytes ({int(transfers):,} transfers); second snapshot after "
      f"{int(transfers)//100:,} more transfers ({int(changed):,} bytes differ); {cores} cores; "
      f"load average at start {load0}, at end {load_end}.")
print()
print("Every run (wall seconds, peak RSS MiB, bytes stored by that step):")
print()
print("| tool      | step             | run | wall (s) | RSS (MiB)| stored (bytes) |")
print("|-----------|------------------|-----|----------|----------|----------------|")
print(open(rows).read().rstrip())
print()
z = float(zt.split()[0])
def w(t, s): return best[(t, s)][0]
def ratio(a, b): return f"{a / b:.2f}x"
figs = [
  ("first snapshot wall, vs the shell pipeline", ratio(w('bkp','first snapshot'), w('pipeline','first snapshot')), "<= 0.8x"),
  ("first snapshot wall, vs `zstd -3 -T0` alone", ratio(w('bkp','first snapshot'), z), "<= 1.15x"),
  ("second snapshot wall, vs the shell pipeline", ratio(w('bkp','second snapshot'), w('pipeline','second snapshot')), "<= 0.1x"),
  ("second snapshot bytes stored, vs the first", f"{100 * stored[('bkp','second snapshot')] / stored[('bkp','first snapshot')]:.1f}%", "<= 5%"),
  ("first snapshot wall, data file out of the page cache (as TigerBeetle leaves it), vs the pipeline likewise", ratio(w('bkp','first, uncached'), w('pipeline','first, uncached')), "-"),
  ("second snapshot wall, data file out of the page cache, vs the pipeline likewise", ratio(w('bkp','second, uncached'), w('pipeline','second, uncached')), "-"),
  ("first snapshot wall at `[compression] level = 1`, vs the shell pipeline", ratio(w('bkp','first, zstd 1'), w('pipeline','first snapshot')), "-"),
  ("first snapshot bytes stored at level 1, vs level 3", f"{100 * stored[('bkp','first, zstd 1')] / stored[('bkp','first snapshot')]:.1f}%", "-"),
  ("restore wall, vs restic restore", ratio(w('bkp','restore'), w('restic','restore')), "<= 0.5x"),
  ("restore wall, vs restic restore then `sync` (on disk, as bkp's)", ratio(w('bkp','restore'), w('restic','restore, synced')), "-"),
  ("peak RSS, 1 GiB vs 8 GiB input (the same data)", f"{rs.split()[1]} vs {rl.split()[1]} MiB", "within 10%, <= 256 MiB"),
  ("peak RSS, the data file's first GiB alone (its most compressible)", f"{rh} MiB", "-"),
]
print(f"Best of the runs: bkp first snapshot {w('bkp','first snapshot'):.1f} s, second {w('bkp','second snapshot'):.1f} s, "
      f"restore {w('bkp','restore'):.1f} s; pipeline {w('pipeline','first snapshot'):.1f} / {w('pipeline','second snapshot'):.1f} / "
      f"{w('pipeline','restore'):.1f} s; restic {w('restic','first snapshot'):.1f} / {w('restic','second snapshot'):.1f} / "
      f"{w('restic','restore'):.1f} s; `zstd -3 -T0` alone {z:.1f} s.")
print(f"Second snapshot stored: bkp {stored[('bkp','second snapshot')]:,} bytes, pipeline "
      f"{stored[('pipeline','second snapshot')]:,}, restic {stored[('restic','second snapshot')]:,}.")
print()
print("| figure | bkp | target |")
print("|---|---|---|")
for name, got, target in figs:
    print(f"| {name} | {got} | {target} |")
print()
print("Each stage alone on the same file and server (the S3 server shares the two cores):")
print()
print("| stage | wall (s) | S3 server CPU (s) |")
print("|---|---|---|")
print(open(stage_rows).read().rstrip())
PY
cp "$work/results.md" "$BKP_ROOT/bench/compare-results.md"
