#!/usr/bin/env bash
# Orders benchmark, two parts.
#  1. CSV import: a generated file of ROWS rows (bench/orders_csv.py: orders
#     of 1 to 5 lines, 10,000 customers, 2,000 SKUs) imported with
#     `nexus orders import`, on SQLite and on PostgreSQL: rows/s and the
#     command's peak resident memory.
#  2. The saga: on PostgreSQL + Redis, wrk places orders (1 to 3 lines on 20
#     contended products, simulated gateway, no delay) for DURATION; then the
#     script waits until every order is final and reports orders/s from the
#     first placed to the last finished, and checks there is no oversell.
#     With the mode `backlog`, the orders are placed while the server runs no
#     job worker, then the server is restarted with its workers and orders/s
#     is counted from the restart to the last finished: the saga's own rate,
#     not shared with the intake.
# Usage: bench/orders.sh [rows=1000000] [duration=10s] [connections=16] [mode=live|backlog]
#   (rows 0 skips the import)
# Env: BENCH_PG (server URL without database, default
#   postgres://root@127.0.0.1:5432), BENCH_PG_PARAMS (the connection's
#   parameters, default sslmode=disable; sslmode=require for TLS, which
#   sqlx 0.9.0 sends without TCP_NODELAY: large statements then stall, see
#   docs/performance.md), NEXUS_REDIS_URL (default redis://127.0.0.1:6379),
#   BENCH_IMPORT_FLAGS (more flags for `nexus orders import`, e.g.
#   --send-receipts).
# Needs: PostgreSQL, Redis, wrk, psql, curl, python3. Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
duration=${2:-10s}
connections=${3:-16}
mode=${4:-live}
pg=${BENCH_PG:-postgres://root@127.0.0.1:5432}
params=${BENCH_PG_PARAMS-sslmode=disable}
redis=${NEXUS_REDIS_URL:-redis://127.0.0.1:6379}
port=18421
base="http://127.0.0.1:$port"
work=$(mktemp -d)
bin="${CARGO_TARGET_DIR:-target}/release/nexus"
server=""

cargo build --release --quiet
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  wait 2>/dev/null || true
  # The scratch databases (created in command substitutions, so found by name).
  for db in $(psql -At "$pg/postgres" -c "SELECT datname FROM pg_database WHERE datname LIKE 'nexus_orders_$$\_%'"); do
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  done
  redis-cli -u "$redis" --scan --pattern "nexus-orders-$$:*" | xargs -r redis-cli -u "$redis" del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
scratch() { local db="nexus_orders_$$_$1"; psql -q -v ON_ERROR_STOP=1 "$pg/postgres" -c "CREATE DATABASE $db"; echo "$pg/$db?$params"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Start the server on $1 (a database URL, empty for SQLite in $work/$2);
# extra settings from the environment of the call.
start() {
  env NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$work/$2" ${1:+NEXUS_DATABASE_URL=$1} RUST_LOG=warn \
    "$bin" serve >>"$work/$2.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && return; sleep 0.2; done
  cat "$work/$2.log"; exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }
# A tenant `bench` on the enterprise tier (no rate limit in the way) and a
# warehouse MAIN; sets $token.
setup() {
  token=$(curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"tenant_name":"Bench","tenant_slug":"bench","name":"Bench","email":"bench@example.com","password":"correct horse 42"}' \
    | json '["data"]["token"]["token"]')
  local tenant key
  tenant=$(curl -sf "$base/api/v1/license" -H "Authorization: Bearer $token" | json '["data"]["tenant_id"]')
  key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= "$bin" license sign --tenant "$tenant" --tier enterprise)
  post /api/v1/license/key "{\"key\":\"$key\"}" >/dev/null
  warehouse=$(post /api/v1/warehouses '{"code":"MAIN","name":"Main"}' | json '["data"]["id"]')
}
post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $token" -H 'content-type: application/json' -d "$2"; }

echo "== generating $rows rows"
python3 bench/orders_csv.py "$rows" >"$work/orders.csv"
echo "$(wc -c <"$work/orders.csv") bytes, $(cut -d, -f1 "$work/orders.csv" | uniq | tail -n +2 | wc -l) orders"

# Import the file with the command line into the database of $1 (empty:
# SQLite); print seconds, rows/s and peak RSS (GNU time).
import() {
  local name=$2
  start "$1" "$name"; setup; stop
  echo "== import, $name"
  env NEXUS_DATA_DIR="$work/$name" ${1:+NEXUS_DATABASE_URL=$1} RUST_LOG=warn /usr/bin/time -f '%e %M' -o "$work/time" \
    "$bin" orders import "$work/orders.csv" --tenant bench --warehouse MAIN ${BENCH_IMPORT_FLAGS:-} 2>/dev/null | head -3
  read -r secs kib <"$work/time"
  python3 -c "print(f'{$rows} rows in {$secs} s: {$rows / $secs:,.0f} rows/s, peak RSS {$kib / 1024:.0f} MiB')"
}
if [ "$rows" -gt 0 ]; then
  import "" sqlite
  import "$(scratch import)" postgres
fi

echo "== the saga ($mode), PostgreSQL + Redis: orders for $duration from $connections connections"
url=$(scratch saga)
workers=true
[ "$mode" = backlog ] && workers=false
saga() { NEXUS_REDIS_URL="$redis" NEXUS_REDIS_KEY_PREFIX="nexus-orders-$$:" NEXUS_JOBS__RUN_IN_SERVER=$1 start "$url" saga; }
saga $workers
setup
products=""
for i in $(seq 1 20); do
  id=$(post /api/v1/products "{\"sku\":\"HOT-$i\",\"name\":\"Contended $i\",\"unit_price\":100,\"currency\":\"EUR\"}" | json '["data"]["id"]')
  post /api/v1/stock/adjustments "{\"product_id\":\"$id\",\"warehouse_id\":\"$warehouse\",\"quantity\":10000000,\"reason\":\"bench\"}" >/dev/null
  products="$products,$id"
done
customers=""
for i in $(seq 1 50); do
  id=$(post /api/v1/customers "{\"email\":\"c$i@example.com\",\"name\":\"Customer $i\"}" | json '["data"]["id"]')
  customers="$customers,$id"
done
TOKEN=$token WAREHOUSE=$warehouse PRODUCTS=$products CUSTOMERS=$customers \
  wrk -t1 -c"$connections" -d"$duration" --latency -s bench/order.lua "$base" \
  | grep -E 'requests in|Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors'
sql() { psql -q -At "$url" -c "$1"; }
since="min(created_at)"
if [ "$mode" = backlog ]; then
  echo "$(sql "SELECT count(*) FROM orders") orders placed with no worker running; restarting with the workers"
  stop
  restarted=$(sql "SELECT now()")
  saga true
  since="'$restarted'::timestamptz"
fi
for _ in $(seq 1 600); do
  open=$(sql "SELECT count(*) FROM orders WHERE status NOT IN ('completed', 'failed', 'cancelled')")
  [ "$open" = 0 ] && break
  sleep 1
done
echo "orders not final after the wait: $open"
sql "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status" | sed 's/^/  /'
from="the first placed"
[ "$mode" = backlog ] && from="the restart"
sql "SELECT count(*), round(count(*) / extract(epoch FROM max(updated_at) - $since)::numeric, 0)
     FROM orders WHERE status = 'completed'" \
  | awk -F'|' -v from="$from" '{ printf "%s orders completed, %s orders/s from %s to the last completed\n", $1, $2, from }'
sql "SELECT count(*) FROM stock_levels l WHERE l.reserved < 0 OR l.reserved > l.on_hand
       OR (l.on_hand, l.reserved) <> (SELECT coalesce(sum(m.quantity), 0), coalesce(sum(m.reserved_delta), 0)
            FROM stock_movements m WHERE m.product_id = l.product_id AND m.warehouse_id = l.warehouse_id)" \
  | awk '{ printf "stock levels oversold or off their movements: %s\n", $1 }'
# What the orders left to do after their saga (notifications, listeners),
# and when it was done (to the second).
echo "jobs still due when every order was final: $(sql "SELECT coalesce(string_agg(kind || ' ' || n, ', '), 'none')
     FROM (SELECT kind, count(*) AS n FROM jobs WHERE status IN ('pending', 'running') AND run_at <= now()
           GROUP BY kind ORDER BY kind) q")"
for _ in $(seq 1 600); do
  due=$(sql "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running') AND run_at <= now()")
  [ "$due" = 0 ] && break
  sleep 1
done
echo "every due job done $(sql "SELECT round(extract(epoch FROM now() - $since)::numeric, 0) FROM orders LIMIT 1") s from $from ($due still due)"
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
