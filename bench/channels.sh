#!/usr/bin/env bash
# Channels benchmark: the release server and the fake stores
# (examples/fake-stores.rs) in a second process, four stores (Shopify,
# WooCommerce, Amazon, Etsy) connected to one warehouse; bench/channels.py
# measures.
#  1. Limits lifted (`modules.channels.rate_limits = false`, the fakes refuse
#     nothing): SKUS products imported on each store, then a full push of
#     all four at once: SKU pushes per second landed at the stores.
#  2. Same run: CHANGES stock adjustments (REST), one after another, each
#     timed from the request until its new ATP has landed on all four
#     stores: p50 / p99.
#  3. Default limits on (Nexus paces every store by its channel's default
#     bucket; each fake refuses what overflows that same bucket, Shopify also
#     over its cost budget): SKUS_LIMITED products imported, then a full push
#     of all four, measured for WINDOW seconds: requests/s each store saw
#     against its limit, and the requests it refused (429 / THROTTLED).
# Usage: bench/channels.sh [skus=2000] [changes=200] [window=30] [skus_limited=200]
# Env: NEXUS_DATABASE_URL / NEXUS_REDIS_URL to measure on PostgreSQL / Redis
#   (one database each run: it is used for both servers, so give an empty one).
# Needs: curl, python3. Builds the release binary and example.
set -euo pipefail
cd "$(dirname "$0")/.."
skus=${1:-2000}
changes=${2:-200}
window=${3:-30}
skus_limited=${4:-200}
port=18431
stats_port=18432
base="http://127.0.0.1:$port"
work=$(mktemp -d)
target="${CARGO_TARGET_DIR:-target}/release"
server=""
fakes=""

cargo build --release --quiet --bin nexus --example fake-stores
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  [ -n "$fakes" ] && kill "$fakes" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $token" -H 'content-type: application/json' -d "$2"; }

# Start the fakes with FAKE_LIMITS=$1 and a catalog of $2, then the server
# (its settings from the rest of the arguments, as env); a tenant on the
# enterprise tier (no API rate limit in the way) with a warehouse MAIN.
start() {
  local limits=$1 size=$2 name=$3; shift 3
  FAKE_LIMITS=$limits FAKE_CATALOG=$size FAKE_STATS_PORT=$stats_port "$target/examples/fake-stores" >"$work/fakes-$name.log" 2>&1 &
  fakes=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$stats_port/stores" >/dev/null && break; sleep 0.1; done
  local token_url
  token_url=$(curl -sf "http://127.0.0.1:$stats_port/stores" | json '["amazon"]["token_url"]')
  mkdir -p "$work/$name"
  env NEXUS_BIND=127.0.0.1:$port NEXUS_DATA_DIR="$work/$name" RUST_LOG=warn \
    NEXUS_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.0/8"]' NEXUS_MODULES__CHANNELS__AMAZON__TOKEN_URL="$token_url" \
    NEXUS_MODULES__CHANNELS__RECONCILE_INTERVAL_SECS=0 "$@" \
    "$target/nexus" serve >"$work/server-$name.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
  curl -sf "$base/health" >/dev/null || { cat "$work/server-$name.log"; exit 1; }
  local slug="bench-$RANDOM$RANDOM" tenant key
  token=$(curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"tenant_name\":\"Bench\",\"tenant_slug\":\"$slug\",\"name\":\"Bench\",\"email\":\"$slug@example.com\",\"password\":\"correct horse 42\"}" \
    | json '["data"]["token"]["token"]')
  tenant=$(curl -sf "$base/api/v1/license" -H "Authorization: Bearer $token" | json '["data"]["tenant_id"]')
  key=$(NEXUS_LICENSE_SIGNING_KEY=oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk= "$target/nexus" license sign --tenant "$tenant" --tier enterprise)
  post /api/v1/license/key "{\"key\":\"$key\"}" >/dev/null
  warehouse=$(post /api/v1/warehouses '{"code":"MAIN","name":"Main"}' | json '["data"]["id"]')
}
stop() {
  kill "$server" "$fakes" 2>/dev/null || true
  for _ in $(seq 1 25); do kill -0 "$server" 2>/dev/null || kill -0 "$fakes" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$server" "$fakes" 2>/dev/null || true
  server=""; fakes=""
}
measure() {
  BASE=$base TOKEN=$token WAREHOUSE=$warehouse STATS="http://127.0.0.1:$stats_port" python3 bench/channels.py "$@"
}

echo "== limits lifted: $skus SKUs on each of 4 stores"
start off "$skus" lifted NEXUS_MODULES__CHANNELS__RATE_LIMITS=false
measure push "$changes"
echo "== server memory"
grep -E 'VmHWM|VmRSS' "/proc/$server/status"
stop

echo "== default limits: $skus_limited SKUs on each of 4 stores"
start channel "$skus_limited" limited
measure limited "$window"
stop
