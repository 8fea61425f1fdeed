#!/usr/bin/env bash
# Inventory benchmark: reservations per second under contention (every
# request reserves the same product in the same warehouse) and a paged
# product list, with wrk from a second process.
# Usage: bench/inventory.sh [duration=10s] [connections=16]
# Env: NEXUS_DATABASE_URL / NEXUS_REDIS_URL to measure on PostgreSQL / Redis.
# Needs: wrk, curl, python3. Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-16}
port=18397
base="http://127.0.0.1:$port"
data=$(mktemp -d)

cargo build --release --quiet
NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$data" RUST_LOG=warn ./target/release/nexus serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $token" -H 'content-type: application/json' -d "$2"; }
slug="bench-$RANDOM$RANDOM"
token=$(curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"tenant_name\":\"Bench\",\"tenant_slug\":\"$slug\",\"name\":\"Bench\",\"email\":\"bench@example.com\",\"password\":\"correct horse 42\"}" \
  | json '["data"]["token"]["token"]')
# Unlimited tier, so the per-user rate limit does not turn this into a 429 benchmark.
tenant_id=$(curl -sf "$base/api/v1/license" -H "Authorization: Bearer $token" | json '["data"]["tenant_id"]')
license_key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= ./target/release/nexus license sign --tenant "$tenant_id" --tier enterprise)
post /api/v1/license/key "{\"key\":\"$license_key\"}" >/dev/null

warehouse=$(post /api/v1/warehouses '{"code":"MAIN","name":"Main"}' | json '["data"]["id"]')
for i in $(seq 1 200); do
  post /api/v1/products "{\"sku\":\"SKU-$i\",\"name\":\"Product $i\",\"unit_price\":$((i * 100)),\"currency\":\"EUR\"}" >/dev/null
done
product=$(post /api/v1/products '{"sku":"HOT","name":"Contended","unit_price":999,"currency":"EUR"}' | json '["data"]["id"]')
post /api/v1/stock/adjustments "{\"product_id\":\"$product\",\"warehouse_id\":\"$warehouse\",\"quantity\":10000000,\"reason\":\"bench\"}" >/dev/null

run() {
  local name=$1; shift
  echo "== $name"
  wrk -t2 -c"$connections" -d"$duration" --latency "$@" | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors'
}
TOKEN=$token PRODUCT=$product WAREHOUSE=$warehouse RUN=$RANDOM \
  run "POST /api/v1/reservations (1 unit, same product: full contention)" -s bench/reserve.lua "$base"
level=$(curl -sf "$base/api/v1/stock-levels?product_id=$product" -H "Authorization: Bearer $token")
echo "reserved after the run: $(echo "$level" | json '["data"][0]["reserved"]') (on hand 10000000; never above it)"
run "GET /api/v1/products?limit=25&sort=-created_at (201 products)" -H "Authorization: Bearer $token" \
  "$base/api/v1/products?limit=25&sort=-created_at"
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
