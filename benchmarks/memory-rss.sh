#!/usr/bin/env bash
# Peak resident memory (VmHWM) of `backfill run --workers 2` on tables that were never analyzed
# (reltuples = -1), at several sizes: the range sample must stay bounded as the table grows.
# Usage: benchmarks/memory-rss.sh [BACKFILL_BINARY] [ROWS…]   (default: .build/release/backfill 3000000 30000000)
# Starts a throwaway PostgreSQL (as the postgres user when run as root) and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.build/release/backfill}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(3000000 30000000)
[ -x "$bin" ] || { echo "build it first: swift build -c release --product backfill" >&2; exit 2; }
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)
dir=$(mktemp -d /tmp/backfill-rss-XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
port=$((20000 + RANDOM % 20000))
as_pg "$bindir/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c fsync=off" -l "$dir/log" -w start >/dev/null
trap 'as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null; rm -rf "$dir"' EXIT
url="host=$dir port=$port user=postgres dbname=postgres"
job="$dir/job.yaml"
printf 'name: rss\ntable: big\nkey: [id]\nset: {v: 1}\n' > "$job"
echo "| rows | table MB | reltuples | ranges | peak RSS MB |"
echo "| ---: | ---: | ---: | ---: | ---: |"
for rows in "${sizes[@]}"; do
  psql "$url" -qc "SET client_min_messages = warning; DROP TABLE IF EXISTS big; DROP SCHEMA IF EXISTS backfill CASCADE;
    CREATE TABLE big (id bigint PRIMARY KEY, v int) WITH (autovacuum_enabled = false);
    INSERT INTO big SELECT g, 0 FROM generate_series(1, $rows) g;" >/dev/null
  "$bin" run "$job" --database "$url" --workers 2 --max-runtime 3s --progress never >/dev/null 2>&1 &
  pid=$!; peak=0
  while kill -0 "$pid" 2>/dev/null; do
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
    sleep 0.02
  done
  wait "$pid" || true
  read -r mb tuples ranges < <(psql "$url" -Atc "SELECT pg_total_relation_size('big') / 1048576, reltuples::bigint, (SELECT count(*) FROM backfill.ranges) FROM pg_class WHERE relname = 'big'" | tr '|' ' ')
  echo "| $rows | $mb | $tuples | $ranges | $((peak / 1024)) |"
done
