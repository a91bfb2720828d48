#!/usr/bin/env bash
# Where a batch's time goes, statement shape by statement shape: CPU instructions per changed row,
# counted by valgrind's callgrind in a single-user PostgreSQL backend, so that the figures repeat
# whatever else the machine does (this VM's wall-clock noise, ±20 %, is larger than the gaps).
#
#   benchmarks/cost-breakdown.sh [ROWS]     (needs valgrind and the PostgreSQL server programs)
#
# Seeds the bench's `bench_accounts` table (ROWS rows, default 2,000,000; fsync off), then for each
# shape runs 3 batches of 10,000 keys over fresh key ranges (each shape its own ranges, so every
# batch changes 10,000 rows), with enable_seqscan off as Backfill's batches have it. A run of
# `SELECT 1` gives the backend's start and stop, which is subtracted. Writes
# benchmarks/results/cost-breakdown.md.
set -euo pipefail

rows=${1:-2000000}
here=$(cd "$(dirname "$0")" && pwd)
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d /tmp/cost-breakdown.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
trap 'rm -rf "$work"' EXIT
as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust >/dev/null
single() { as_pg "$bindir/postgres" --single -D "$work/data" -c fsync=off -c synchronous_commit=off -c full_page_writes=off postgres; }

# The seed commits synchronously, so that its VACUUM sets the visibility map (after an asynchronous
# commit the hint bits wait for the WAL flush and every page stays not all-visible).
as_pg "$bindir/postgres" --single -D "$work/data" -c fsync=off -c synchronous_commit=on -c full_page_writes=off postgres >/dev/null <<EOF
CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance numeric(12, 2) NOT NULL, email text NOT NULL, status text NOT NULL, balance_cents bigint, updated_at timestamptz NOT NULL, live_touches int NOT NULL DEFAULT 0)
INSERT INTO bench_accounts (id, balance, email, status, updated_at) SELECT g, (g * 7919 % 1000000) / 100.0, 'customer.' || lpad(g::text, 8, '0') || '@mail.example.com', (ARRAY['active', 'dormant', 'closed', 'pending'])[1 + g % 4], timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, ${rows}::bigint) g
VACUUM ANALYZE bench_accounts
CREATE TABLE ranges (job text, range_id int, last_key jsonb, rows_done bigint NOT NULL DEFAULT 0, keys_walked bigint NOT NULL DEFAULT 0, last_batch_outside bigint, PRIMARY KEY (job, range_id))
INSERT INTO ranges VALUES ('j', 0, NULL, 0, 0, 0)
CHECKPOINT
EOF

range='id > $1 AND id <= $2'
update="UPDATE bench_accounts SET balance_cents = ((balance * 100)::bigint) WHERE $range AND (balance_cents IS NULL)"
checkpoint='UPDATE ranges SET last_key = to_jsonb($2::text), rows_done = rows_done + ROWS, keys_walked = keys_walked + 10000, last_batch_outside = OUTSIDE WHERE job = '"'j'"' AND range_id = 0'
declare -A shapes=(
  [loop]="$update"
  [bitmap]="$update"
  [before]="WITH changed AS ($update RETURNING id), checkpoint AS (${checkpoint/ROWS/(SELECT count(*) FROM changed)}) SELECT count(*) AS rows, count(*) FILTER (WHERE NOT ($range)) AS outside FROM changed"
  [onepass]="WITH changed AS ($update RETURNING NOT ($range) AS outside), tally AS (SELECT count(*) AS rows, count(*) FILTER (WHERE outside) AS outside FROM changed), checkpoint AS (${checkpoint/ROWS/(SELECT rows FROM tally)}) SELECT rows, outside FROM tally"
  [floor]="WITH changed AS ($update RETURNING 1), checkpoint AS (${checkpoint/ROWS/(SELECT count(*) FROM changed)}) SELECT 1"
  [upper]="SELECT id FROM bench_accounts WHERE id > \$1 AND \$2 > 0 ORDER BY id OFFSET 9999 LIMIT 1"
  [span]="SELECT id FROM bench_accounts WHERE id > \$1 AND id <= \$1 + 10000 AND \$2 > 0 ORDER BY id DESC LIMIT 1"
)
shapes[before]=${shapes[before]/OUTSIDE/(SELECT count(*) FROM changed WHERE NOT ($range))}
shapes[onepass]=${shapes[onepass]/OUTSIDE/(SELECT outside FROM tally)}
shapes[floor]=${shapes[floor]/OUTSIDE/0}
declare -A titles=(
  [loop]="the hand-written loop's statement: \`UPDATE … WHERE id > a AND id <= b AND (where)\`, an index scan, a custom plan"
  [bitmap]="the same as a bitmap heap scan (\`enable_indexscan = off\`)"
  [before]="Backfill's batch statement before this change: \`RETURNING id\`, the checkpoint CTE reading \`changed\` twice, the result once more"
  [onepass]="Backfill's batch statement now: \`RETURNING NOT (range) AS outside\`, counted once (\`tally\`), read by the checkpoint and the result"
  [floor]="the least a count in the statement costs: \`RETURNING 1\`, one count, no outside-range check"
  [upper]="the upper-key read by counting, per key walked (\`OFFSET B-1 LIMIT 1\` over the key's index, an index-only scan)"
  [span]="the upper-key read by span, per key walked (a dense integer key: the greatest key in \`(last, last + B]\`, one backward descent)"
)
counted() {  # FILE -> instructions of a single-user backend running it
  as_pg valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$bindir/postgres" --single -D "$work/data" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off postgres < "$1" >/dev/null 2>&1
  awk '/^totals:/ {print $2}' "$work/cg"
}
script() {  # SHAPE START -> a script of 3 executions over fresh ranges from START
  echo "SET enable_seqscan = off"
  [ "$1" = bitmap ] && echo "SET enable_indexscan = off"
  [ "$1" = nothing ] || echo "PREPARE p(bigint, bigint) AS ${shapes[$1]}"
  for i in 0 1 2; do
    if [ "$1" = nothing ]; then echo "SELECT 1"; else echo "EXECUTE p($(( $2 + i * 10000 )), $(( $2 + (i + 1) * 10000 )))"; fi
  done
}
script nothing 0 > "$work/nothing.sql"
base=$(counted "$work/nothing.sql")
start=100000
declare -A per
for shape in loop bitmap before onepass floor upper span; do
  script "$shape" "$start" > "$work/$shape.sql"
  per[$shape]=$(( ($(counted "$work/$shape.sql") - base) / 30000 ))
  [ "$shape" = upper ] || [ "$shape" = span ] || start=$(( start + 30000 ))
  echo "$shape: ${per[$shape]} instructions a row" >&2
done

server=$(single <<<"SELECT version()" 2>/dev/null | sed -n 's/.*version = "\(.*\)".*/\1/p' | head -1)
{
  echo "# Where a batch's time goes"
  echo
  echo "Written by \`benchmarks/cost-breakdown.sh\`; never edited by hand."
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- command: \`benchmarks/cost-breakdown.sh $rows\`"
  echo "- server: ${server:-PostgreSQL}, single-user backend under valgrind (callgrind), fsync off"
  echo "- each shape: 3 batches of 10,000 keys over fresh ranges of a $rows-row \`bench_accounts\`, prepared, \`enable_seqscan = off\`; the table seeded with a synchronous commit and vacuumed (every page all-visible); instructions counted, the backend's start and stop subtracted"
  echo
  echo "| statement shape | instructions a changed row | × the loop's statement |"
  echo "|---|---:|---:|"
  for shape in loop bitmap before onepass floor upper span; do
    printf '| %s | %d | %s |\n' "${titles[$shape]}" "${per[$shape]}" "$(awk -v a="${per[$shape]}" -v b="${per[loop]}" 'BEGIN { printf "%.3f", a / b }')"
  done
} > "$here/results/cost-breakdown.md"
cat "$here/results/cost-breakdown.md"
