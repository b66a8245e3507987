#!/usr/bin/env bash
# Profile: where a restore of a PostgreSQL base backup spends its time. One
# pgbench database (scale SCALE), one `bkp snapshot --kind postgres` into a local
# directory store, then `bkp -v restore latest --kind postgres` ROUNDS times into a
# new directory each, with bkp's own timings of its stages (read, decrypt and
# unpack; pg_verifybackup; fsync of the restored tree) and, beside them, the same
# work done by the tools alone on the restored tree: `pg_verifybackup` again (files
# in the page cache), and `tar` of the tree into a new directory then `sync`.
# Prints the figures and writes them to bench/pg-restore-stages-results.md. Not a
# test.
#
#   bench/pg-restore-stages.sh                 # scale 100 (about 1.5 GB), 3 rounds
#   SCALE=20 ROUNDS=1 bench/pg-restore-stages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scale="${SCALE:-100}"
rounds="${ROUNDS:-3}"
results="${RESULTS:-$BKP_ROOT/bench/pg-restore-stages-results.md}"
bkp_src="${BKP_BIN:-$CARGO_TARGET_DIR/debug/bkp}"
[ -x "$bkp_src" ] || { echo "no bkp binary at $bkp_src: build it first (cargo build), or set BKP_BIN" >&2; exit 2; }
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/bkp-pg-stages.XXXXXX")"
chmod 755 "$work"
# shellcheck source=lib.sh
source "$BKP_ROOT/bench/lib.sh"   # freeport; its cleanup is replaced below
u="$work/u"
mkdir -p "$u/sock" "$u/home" "$u/bkp" "$u/pg" "$u/restore"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$u/home")
  chown -R postgres: "$u"
fi
data="$u/pg/data"
cleanup() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
bkp="$u/bin-bkp"; cp "$bkp_src" "$bkp"; chmod 755 "$bkp"
port="$(freeport)"

echo "==> PostgreSQL: pgbench scale $scale" >&2
"${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$u/pg/log" -w -t 120 \
  -o "-p $port -k $u/sock -c listen_addresses='' -c shared_buffers=256MB -c max_wal_size=1GB" start >/dev/null
export PGHOST="$u/sock" PGPORT="$port" PGUSER=postgres
"$pgbin/psql" -X -q -c "CREATE DATABASE bench" postgres
"$pgbin/pgbench" -i -q -s "$scale" bench 2>"$work/pgbench-init.log" || { tail -n 5 "$work/pgbench-init.log" >&2; exit 1; }
db_mib="$(( $("$pgbin/psql" -X -At -c "SELECT pg_database_size('bench')" bench) / 1048576 ))"

head -c 32 /dev/urandom >"$u/bkp/key"; chmod 600 "$u/bkp/key"
cat >"$u/bkp.toml" <<TOML
work_dir = "$u/bkp/work"
[store]
type = "local"
path = "$u/bkp/store"
[encryption]
key_file = "$u/bkp/key"
[postgres]
database = "bench"
host = "$u/sock"
port = $port
user = "postgres"
bin_dir = "$pgbin"
checkpoint = "fast"
TOML
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$u/bkp" "$u/bkp.toml"
echo "==> bkp snapshot --kind postgres" >&2
"${as_pg[@]}" "$bkp" -q --config "$u/bkp.toml" snapshot --kind postgres

# A stage's seconds from bkp's -v line "… in 1.2s".
stage() { grep -o "$1 in [0-9.]*s" "$2" | tail -n 1 | grep -o '[0-9.]*s$' | tr -d s; }
rows=()
for r in $(seq "$rounds"); do
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  target="$u/restore/r$r"
  start=$(date +%s.%N)
  "${as_pg[@]}" "$bkp" -v --config "$u/bkp.toml" restore latest --kind postgres --target "$target" \
    >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  wall="$(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')")"
  unpack="$(stage "unpacked base backup [0-9a-f-]*" "$work/err")"
  verify="$(stage "pg_verifybackup checked its files" "$work/err")"
  durable="$(stage "made the restore durable" "$work/err")"
  # The tools alone, on the tree just restored.
  t0=$(date +%s.%N)
  # (bkp set the backup's postgresql.auto.conf aside after its own check.)
  "${as_pg[@]}" "$pgbin/pg_verifybackup" -n -q -i postgresql.auto.conf -i postgresql.auto.conf.from-backup "$target" >/dev/null
  verify_alone="$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')")"
  t0=$(date +%s.%N)
  mkdir "$work/copy"; tar -C "$target" -cf - . | tar -C "$work/copy" -xf -; sync
  copy_alone="$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')")"
  rm -rf "$work/copy" "$target"
  printf 'round %s: restore %ss (unpack %ss, pg_verifybackup %ss, durable %ss); alone: pg_verifybackup %ss, tar | tar && sync %ss\n' \
    "$r" "$wall" "$unpack" "$verify" "$durable" "$verify_alone" "$copy_alone"
  rows+=("| $r | $wall | $unpack | $verify | $durable | $verify_alone | $copy_alone |")
done

{
echo "PostgreSQL base backup restore, stage by stage: pgbench scale $scale ($db_mib MiB database), local directory store, $(nproc) cores, $(date -u +%Y-%m-%d); page cache dropped before each round where allowed."
echo
echo "| round | bkp restore, wall (s) | read, decrypt, unpack (s) | pg_verifybackup (s) | fsync of the tree (s) | pg_verifybackup alone, warm (s) | tar \\| tar, then sync (s) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
} | tee "$results"
