#!/usr/bin/env bash
# Benchmark: `bkp export --kind pgdump` of a PostgreSQL database of about 1 GB
# (pgbench's tables at scale 60 plus a JSONB table), encrypted to a local store,
# next to what an operator would script: `pg_dump -Fc -Z0 | zstd -3 -T0 | age -r KEY`
# into a file, and plain `pg_dump -Fc` (its own zlib). Then the restores: `bkp
# restore --kind pgdump` (which also counts every table's rows) against
# `age -d | zstd -d | pg_restore -d`. Runs alternate, REPS times each; the medians
# and each run's CPU (user + system of the whole command, child processes
# included) go to bench/pgdump-results.md. Not a test: figures depend on the machine.
#
#   bench/pgdump.sh             # scale 60, 3 runs each
#   SCALE=10 REPS=5 bench/pgdump.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
bkp="$CARGO_TARGET_DIR/debug/bkp"
scale="${SCALE:-60}"
reps="${REPS:-3}"
if ! command -v age >/dev/null; then
  echo "installing age (Debian) for the baseline pipeline" >&2
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null
fi
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-bench-pg.XXXXXX")"
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/pg" "$work/sock"
[ "$(id -u)" -ne 0 ] || chown postgres: "$work/pg" "$work/sock"
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/sock -c listen_addresses='' -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null
export PGHOST="$work/sock" PGPORT="$port" PGUSER=postgres
psql=("$pgbin/psql" -X -q -v ON_ERROR_STOP=1)

echo "building the database (pgbench scale $scale and a JSONB table)..." >&2
"${psql[@]}" -d postgres -c "CREATE DATABASE bench"
"$pgbin/pgbench" -i -q -s "$scale" bench 2>/dev/null
"${psql[@]}" -d bench -c "CREATE TABLE events AS SELECT g AS id, jsonb_build_object('user', g % 5000, 'kind', 'event-' || (g % 17), 'tags', jsonb_build_array(md5(g::text), g % 3)) AS doc, now() - g * interval '1 second' AS at FROM generate_series(1, $((scale * 20000))) g"
size="$("${psql[@]}" -d bench -Atc "SELECT pg_database_size('bench')")"
rows="$("${psql[@]}" -d bench -Atc "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM events)")"

head -c 32 /dev/urandom >"$work/key"; chmod 600 "$work/key"   # bkp refuses a key file others may read
age-keygen -o "$work/age.key" 2>/dev/null
recipient="$(age-keygen -y "$work/age.key")"
cat >"$work/bkp.toml" <<EOF
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
[postgres]
database = "bench"
host = "$work/sock"
port = $port
user = "postgres"
bin_dir = "$pgbin"
EOF

measure() { # label, command...: prints "secs cpu"
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs user sys <"$work/time"
  echo "$secs $(python3 -c "print(round($user + $sys, 2))")"
}
# Each measured command is a script of its own, so that /usr/bin/time sees all of it.
P="$pgbin/psql -X -q -v ON_ERROR_STOP=1"
cat >"$work/pipeline_dump" <<EOF
set -o pipefail
$pgbin/pg_dump -Fc -Z0 -d bench | zstd -q -3 -T0 | age -r $recipient >$work/pipe.dump.zst.age
EOF
cat >"$work/plain_dump" <<EOF
$pgbin/pg_dump -Fc -d bench -f $work/plain.dump
EOF
cat >"$work/pipeline_restore" <<EOF
set -eo pipefail
$P -d postgres -c "DROP DATABASE IF EXISTS pipe_restored" -c "CREATE DATABASE pipe_restored"
age -d -i $work/age.key $work/pipe.dump.zst.age | zstd -q -d | $pgbin/pg_restore --exit-on-error -d pipe_restored
EOF
cat >"$work/bkp_restore" <<EOF
set -e
$P -d postgres -c "DROP DATABASE IF EXISTS bkp_restored"
$bkp -q --config $work/bkp.toml restore latest --kind pgdump --target bkp_restored
EOF
cat >"$work/bkp_dump" <<EOF
$bkp -q --config $work/bkp.toml export --kind pgdump
EOF

declare -a bkp_w bkp_c pipe_w pipe_c plain_w plain_c rb_w rb_c rp_w rp_c
for i in $(seq "$reps"); do
  echo "run $i of $reps..." >&2
  read -r w c < <(measure bash "$work/pipeline_dump"); pipe_w+=("$w"); pipe_c+=("$c")
  read -r w c < <(measure bash "$work/bkp_dump"); bkp_w+=("$w"); bkp_c+=("$c")
  read -r w c < <(measure bash "$work/plain_dump"); plain_w+=("$w"); plain_c+=("$c")
  read -r w c < <(measure bash "$work/bkp_restore"); rb_w+=("$w"); rb_c+=("$c")
  read -r w c < <(measure bash "$work/pipeline_restore"); rp_w+=("$w"); rp_c+=("$c")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
stored="$(find "$work/store/pgdump" -type f -name '*.enc' -printf '%s\n' | head -n 1)"
pipe_size="$(stat -c %s "$work/pipe.dump.zst.age")"
plain_size="$(stat -c %s "$work/plain.dump")"
ratio() { python3 -c "print(round($1 / $2, 2))"; }
{
echo "# bench/pgdump.sh"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("${psql[@]}" -d bench -Atc 'SHOW server_version'), pgbench scale $scale + events: database $((size / 1048576)) MiB, $rows rows in the two large tables; $reps runs each, alternating; local store."
echo
echo "| what | median wall s | median CPU s | runs (wall s) | stored |"
echo "|---|---|---|---|---|"
echo "| \`pg_dump -Fc -Z0 \| zstd -3 -T0 \| age\` | $(median "${pipe_w[@]}") | $(median "${pipe_c[@]}") | ${pipe_w[*]} | $((pipe_size / 1048576)) MiB |"
echo "| \`bkp export --kind pgdump\` | $(median "${bkp_w[@]}") | $(median "${bkp_c[@]}") | ${bkp_w[*]} | $((stored / 1048576)) MiB |"
echo "| \`pg_dump -Fc\` (zlib) | $(median "${plain_w[@]}") | $(median "${plain_c[@]}") | ${plain_w[*]} | $((plain_size / 1048576)) MiB |"
echo "| \`bkp restore --kind pgdump\` | $(median "${rb_w[@]}") | $(median "${rb_c[@]}") | ${rb_w[*]} | |"
echo "| \`age -d \| zstd -d \| pg_restore\` | $(median "${rp_w[@]}") | $(median "${rp_c[@]}") | ${rp_w[*]} | |"
echo
echo "bkp dump / pipeline: $(ratio "$(median "${bkp_w[@]}")" "$(median "${pipe_w[@]}")")x wall; bkp restore / pipeline restore: $(ratio "$(median "${rb_w[@]}")" "$(median "${rp_w[@]}")")x wall."
echo "The CPU column is the measured command's own processes (pg_dump, psql, zstd, age, bkp), not the server's. bkp's dump also counts every table's rows in the dump's snapshot (one more scan, on the server), and its restore counts them again in the restored database; the pipeline proves neither."
} | tee "$work/results.md"
cp "$work/results.md" "$BKP_ROOT/bench/pgdump-results.md"
