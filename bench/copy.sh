#!/usr/bin/env bash
# Benchmark: `bkp copy` between two S3 servers (two SeaweedFS on loopback, standing
# for two regions), next to `rclone copy` of the same objects between the same
# servers; then `bkp copy` between two buckets of one server (each object checked,
# then copied inside it), and the extra time a backup run spends when it also writes to a copy
# (`in_backup_runs = true`).
#
# The backup is a full DuckDB export of random doubles (incompressible: what is
# stored is what is copied), SIZE_MB in all (default 4096).
#
# Prints the figures and writes them to bench/copy-results.md. Not a test.
#
#   bench/copy.sh                  # about 4 GB
#   SIZE_MB=512 bench/copy.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
size_mb="${SIZE_MB:-4096}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-copy.XXXXXX")"
source "$BKP_ROOT/bench/lib.sh"

# Two SeaweedFS servers with one identity (each standing for a region).
key="bench$RANDOM"; secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
start_weed() { # name → sets weed_port (not in a subshell: its pid must reach pids)
  local p1 p2 p3 p4
  p1=$(freeport); p2=$(freeport); p3=$(freeport); p4=$(freeport)
  mkdir -p "$work/weed-$1"
  weed server -dir="$work/weed-$1" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$p1" -volume.port="$p2" \
    -filer -filer.port="$p3" -s3 -s3.port="$p4" -s3.config="$work/s3.json" \
    -master.volumeSizeLimitMB=256 -volume.max=400 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$work/weed-$1.log" 2>&1 &
  pids+=($!)
  weed_port="$p4"
}
echo "==> starting two SeaweedFS servers"
start_weed a; port_a="$weed_port"
start_weed b; port_b="$weed_port"
export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RCLONE_CONFIG=/dev/null
for r in a b; do
  p=$([ $r = a ] && echo "$port_a" || echo "$port_b")
  R=$(echo $r | tr a-z A-Z)
  export "RCLONE_CONFIG_${R}_TYPE=s3" "RCLONE_CONFIG_${R}_PROVIDER=SeaweedFS" \
    "RCLONE_CONFIG_${R}_ACCESS_KEY_ID=$key" "RCLONE_CONFIG_${R}_SECRET_ACCESS_KEY=$secret" \
    "RCLONE_CONFIG_${R}_ENDPOINT=http://127.0.0.1:$p" "RCLONE_CONFIG_${R}_REGION=us-east-1"
done
for b in a:bench b:bench a:same b:rclone a:once a:twice b:twice; do
  ok=
  for _ in $(seq 120); do rclone mkdir "$b" 2>/dev/null && rclone touch "$b/ready" 2>/dev/null && { ok=1; break; }; sleep 0.5; done
  [ -n "$ok" ] || { echo "SeaweedFS did not come up for $b" >&2; exit 1; }
done

echo "==> a DuckDB database of $size_mb MB of random doubles"
rows=$((size_mb * 1024 * 1024 / 32))
duck="$work/hot.duckdb"
"$BKP_TOOLS/venv/bin/python" - "$duck" "$rows" <<'PY'
import duckdb, sys
c = duckdb.connect(sys.argv[1])
c.execute(f"CREATE TABLE t AS SELECT random() AS a, random() AS b, random() AS c, random() AS d FROM range({int(sys.argv[2])})")
c.close()
PY

head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"
store() { # endpoint port, bucket
  printf 'type = "s3"\nbucket = "%s"\nprefix = "bkp"\nendpoint = "http://127.0.0.1:%s"\npath_style = true\nregion = "us-east-1"\n' "$2" "$1"
}
config() { # file, copies... (the primary: bucket bench of server a)
  local f="$1"; shift
  { echo "work_dir = \"$work/work-$(basename "$f" .toml)\""; echo '[store]'; store "$port_a" bench
    echo '[encryption]'; echo "key_file = \"$work/key\""
    echo '[duckdb]'; echo "database = \"$duck\""
    printf '%s\n' "$@"; } > "$f"
}
# Copy `b` is on server b; copy `same` is another bucket of server a.
config "$work/bkp.toml" '[[copies]]' 'name = "b"' "$(store "$port_b" bench)" '[[copies]]' 'name = "same"' "$(store "$port_a" same)"

timed() { # command... → "secs rss"
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/time"
}

echo "==> the backup: bkp export --full into server a"
read -r e1 er1 < <(timed "$bkp" --config "$work/bkp.toml" --json export --full)
bytes=$(rclone size --json a:bench/bkp | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
objects=$(rclone size --json a:bench/bkp | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
echo "    $objects objects, $bytes bytes stored in $e1 s"

echo "==> bkp copy --to b (server a → server b, streamed, checked)"
read -r c1 cr1 < <(timed "$bkp" --config "$work/bkp.toml" --json copy --to b)
echo "==> bkp copy --to b again (nothing new)"
read -r c2 cr2 < <(timed "$bkp" --config "$work/bkp.toml" --json copy --to b)
echo "==> rclone copy a:bench/bkp b:rclone/bkp (the same objects, no check)"
read -r r1 rr1 < <(timed rclone copy --transfers 4 a:bench/bkp b:rclone/bkp)
echo "==> rclone copy again (nothing new)"
read -r r2 rr2 < <(timed rclone copy --transfers 4 a:bench/bkp b:rclone/bkp)
echo "==> bkp copy --to same (another bucket of server a: each object checked, then copied inside it)"
read -r s1 sr1 < <(timed "$bkp" --config "$work/bkp.toml" --json copy --to same)
read -r inside copied < <(python3 -c 'import json,sys; o=json.load(open(sys.argv[1]))["copies"][0]["outcome"]; print(o["objects_copied_server_side"], o["objects_copied"])' "$work/out")
[ "$inside" = "$copied" ] && [ "$inside" -gt 0 ] || { echo "copy 'same' was not made inside the server ($inside of $copied objects)" >&2; exit 1; }

rclone purge b:rclone; rclone purge a:same; rclone purge b:bench   # disk space for what follows
echo "==> the extra time of a backup run that also writes to a copy"
# A fresh primary each (buckets once and twice of server a): both runs store
# everything; the page cache is warm for both (the export above read it all).
config "$work/one.toml"
config "$work/two.toml" '[[copies]]' 'name = "b"' "$(store "$port_b" twice)" 'in_backup_runs = true'
sed -i '0,/^bucket = "bench"$/s//bucket = "once"/' "$work/one.toml"
sed -i '0,/^bucket = "bench"$/s//bucket = "twice"/' "$work/two.toml"
read -r o1 or1 < <(timed "$bkp" --config "$work/one.toml" --json export --full)
read -r t1 tr1 < <(timed "$bkp" --config "$work/two.toml" --json export --full)
# A copy that failed in a backup run is only a warning: check it took everything.
in_copy=$(rclone size --json b:twice/bkp | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
in_primary=$(rclone size --json a:twice/bkp | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
[ "$in_copy" = "$in_primary" ] || { echo "the copy holds $in_copy bytes, the primary $in_primary" >&2; exit 1; }

mb() { python3 -c "print(round($bytes / 1e6 / $1, 1))"; }
{
  echo "A full DuckDB export of $size_mb MB of random doubles: $objects objects, $bytes bytes stored; two SeaweedFS servers on 127.0.0.1 (standing for two regions); $(nproc) cores; $(date -u +%F)"
  echo
  echo "| run | wall (s) | MB/s | peak RSS (MiB) |"
  echo "|---|---|---|---|"
  echo "| bkp copy, server a → server b (each object's size and SHA-256 checked against its manifest) | $c1 | $(mb "$c1") | $((cr1 / 1024)) |"
  echo "| rclone copy --transfers 4, the same objects (no check against a manifest) | $r1 | $(mb "$r1") | $((rr1 / 1024)) |"
  echo "| bkp copy, nothing new | $c2 | - | $((cr2 / 1024)) |"
  echo "| rclone copy, nothing new | $r2 | - | $((rr2 / 1024)) |"
  echo "| bkp copy, two buckets of server a ($inside objects checked, then copied inside it) | $s1 | $(mb "$s1") | $((sr1 / 1024)) |"
  echo "| bkp export --full, one store | $o1 | $(mb "$o1") | $((or1 / 1024)) |"
  echo "| bkp export --full, also into a copy on server b (in_backup_runs) | $t1 | $(mb "$t1") | $((tr1 / 1024)) |"
  echo
  echo "Produced by \`SIZE_MB=$size_mb bench/copy.sh\`."
} | tee "$BKP_ROOT/bench/copy-results.md"
