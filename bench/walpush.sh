#!/usr/bin/env bash
# Benchmark: `bkp wal push`, one run per WAL segment as PostgreSQL's archive_command
# runs it, on real 16 MiB segments of a pgbench workload, to S3 on a local SeaweedFS
# server and to a local store; next to what an operator would script per segment:
# `zstd -3 | age | rclone rcat` (S3) and `zstd -3 | age > file` (local). Then
# `bkp wal fetch` (restore_command) of the same segments from S3. Prints the median
# and p99 milliseconds per segment and writes them to bench/walpush-results.md.
# Not a test: figures depend on the machine.
#
#   bench/walpush.sh                # 60 segments
#   SEGMENTS=200 bench/walpush.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="$CARGO_TARGET_DIR/debug/bkp"
segments="${SEGMENTS:-60}"
if ! command -v age >/dev/null; then
  echo "installing age (Debian) for the baseline pipeline" >&2
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null
fi
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-wal.XXXXXX")"
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
pids=()
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT
# SeaweedFS listens on each port + 10000 for gRPC too: both must be free and valid.
freeport() { python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

echo "==> $segments WAL segments of a pgbench workload" >&2
port="$(freeport)"
mkdir -p "$work/pg" "$work/sock" "$work/segs"
[ "$(id -u)" -ne 0 ] || chown postgres: "$work/pg" "$work/sock" "$work/segs"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/sock -c listen_addresses='' -c archive_mode=on -c archive_command='cp %p $work/segs/%f'" start >/dev/null
export PGHOST="$work/sock" PGPORT="$port" PGUSER=postgres
"$pgbin/psql" -X -q -d postgres -c "CREATE DATABASE bench"
"$pgbin/pgbench" -i -q -s 10 bench 2>/dev/null
while [ "$(find "$work/segs" -name '0*' -size 16M | wc -l)" -lt "$segments" ]; do
  "$pgbin/pgbench" -T 5 -c 2 bench >/dev/null 2>&1
done
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null
# A data directory for bkp: the real pg_control (its system identifier) and pg_wal.
mkdir -p "$work/pgdata/global" "$work/pgdata/pg_wal"
cp "$work/pg/data/global/pg_control" "$work/pgdata/global/"
mapfile -t segs < <(find "$work/segs" -name '0*' -size 16M -printf '%f\n' | sort | head -n "$segments")
for s in "${segs[@]}"; do cp "$work/segs/$s" "$work/pgdata/pg_wal/"; done
wal_bytes=$(( ${#segs[@]} * 16 * 1048576 ))

echo "==> starting SeaweedFS" >&2
key="bench$RANDOM"; secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
p1=$(freeport); p2=$(freeport); p3=$(freeport); p4=$(freeport)
mkdir -p "$work/weed"
weed server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$p1" -volume.port="$p2" \
  -filer -filer.port="$p3" -s3 -s3.port="$p4" -s3.config="$work/s3.json" \
  -master.volumeSizeLimitMB=256 -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$work/weed.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=SeaweedFS \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$key" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$secret" \
  RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$p4" RCLONE_CONFIG_S3_REGION=us-east-1
for i in $(seq 120); do
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 5 "$work/weed.log" >&2; echo "SeaweedFS exited" >&2; exit 1; }
  rclone --contimeout 2s --retries 1 --low-level-retries 1 mkdir s3:bench 2>/dev/null &&
    rclone --retries 1 touch s3:bench/ready 2>/dev/null && break
  [ "$i" -lt 120 ] || { echo "SeaweedFS did not come up" >&2; exit 1; }
  sleep 0.5
done

head -c 32 /dev/urandom > "$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
age-keygen -o "$work/age.key" 2>/dev/null
recipient="$(age-keygen -y "$work/age.key")"
cat > "$work/s3.toml" <<TOML
work_dir = "work"
[store]
type = "s3"
bucket = "bench"
prefix = "bkp"
endpoint = "http://127.0.0.1:$p4"
path_style = true
[encryption]
key_file = "key"
TOML
cat > "$work/local.toml" <<TOML
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
TOML
mkdir -p "$work/pipe"

ms() { # command...: milliseconds of wall time
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
declare -a s3_bkp s3_pipe loc_bkp loc_pipe fetch retry
i=0
for s in "${segs[@]}"; do
  i=$((i + 1))
  [ $((i % 20)) -ne 0 ] || echo "    segment $i of ${#segs[@]}" >&2
  # Alternate which goes first, so that neither always finds the file cached.
  if [ $((i % 2)) -eq 0 ]; then
    s3_bkp+=("$(ms "$bkp" -q --config "$work/s3.toml" wal push "pg_wal/$s" --pgdata "$work/pgdata")")
    s3_pipe+=("$(ms bash -c "set -o pipefail; zstd -q -3 -T0 <'$work/pgdata/pg_wal/$s' | age -r $recipient | rclone rcat s3:bench/pipe/$s.zst.age")")
  else
    s3_pipe+=("$(ms bash -c "set -o pipefail; zstd -q -3 -T0 <'$work/pgdata/pg_wal/$s' | age -r $recipient | rclone rcat s3:bench/pipe/$s.zst.age")")
    s3_bkp+=("$(ms "$bkp" -q --config "$work/s3.toml" wal push "pg_wal/$s" --pgdata "$work/pgdata")")
  fi
  loc_bkp+=("$(ms "$bkp" -q --config "$work/local.toml" wal push "pg_wal/$s" --pgdata "$work/pgdata")")
  loc_pipe+=("$(ms bash -c "set -o pipefail; zstd -q -3 -T0 <'$work/pgdata/pg_wal/$s' | age -r $recipient >'$work/pipe/$s.zst.age'")")
  # PostgreSQL retrying a push that succeeded: found by name, nothing stored.
  retry+=("$(ms "$bkp" -q --config "$work/s3.toml" wal push "pg_wal/$s" --pgdata "$work/pgdata")")
  fetch+=("$(ms "$bkp" -q --config "$work/s3.toml" wal fetch "$s" "$work/fetched" --pgdata "$work/pgdata")")
  cmp -s "$work/fetched" "$work/pgdata/pg_wal/$s" || { echo "fetched $s differs" >&2; exit 1; }
  rm -f "$work/fetched"
done
stored=$(rclone lsjson -R s3:bench/bkp/wal | python3 -c 'import json,sys; print(sum(o["Size"] for o in json.load(sys.stdin) if not o["IsDir"]))')
pct() { # percentile, values...
  local p=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v p="$p" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}
row() { echo "| $1 | $(pct 50 "${@:2}") | $(pct 99 "${@:2}") | $(pct 100 "${@:2}") |"; }
{
echo "# bench/walpush.sh"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), ${#segs[@]} segments of 16 MiB from pgbench (scale 10), one process per segment as archive_command runs it; debug build of bkp."
echo
echo "| per segment | median ms | p99 ms | max ms |"
echo "|---|---|---|---|"
row "\`bkp wal push\` → S3 (SeaweedFS)" "${s3_bkp[@]}"
row "\`zstd -3 \| age \| rclone rcat\` → S3" "${s3_pipe[@]}"
row "\`bkp wal push\` → local store" "${loc_bkp[@]}"
row "\`zstd -3 \| age > file\`" "${loc_pipe[@]}"
row "\`bkp wal push\` again (PostgreSQL's retry; found by name)" "${retry[@]}"
row "\`bkp wal fetch\` ← S3 (verified, then renamed into place)" "${fetch[@]}"
echo
echo "Stored in S3 by bkp: $((stored / 1048576)) MiB for $((wal_bytes / 1048576)) MiB of WAL. A server sustains one push per median time: $(python3 -c "print(round(16 / ($(pct 50 "${s3_bkp[@]}") / 1000), 1))") MiB/s of WAL to S3 with one archiver."
} | tee "$work/results.md"
cp "$work/results.md" "$BKP_ROOT/bench/walpush-results.md"
