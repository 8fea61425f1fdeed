#!/usr/bin/env bash
# Queries per request in steady state (Server-Timing), on the debug server and
# a fresh SQLite file: 25 vendors, products and purchase orders, then each
# request once after a first one has warmed the caches.
# Usage: bench/queries.sh (after cargo build). Needs curl, python3.
cd "$(dirname "$0")/.."
set -euo pipefail
N=http://127.0.0.1:18420
d=$(mktemp -d)
NEXUS_BIND=127.0.0.1:18420 NEXUS_DATA_DIR=$d RUST_LOG=warn ./target/debug/nexus serve >$d/log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$d"' EXIT
for i in $(seq 1 100); do curl -sf $N/health >/dev/null && break; sleep 0.2; done
TOKEN=$(curl -s -X POST $N/api/v1/auth/register -H 'content-type: application/json' -d '{"tenant_name":"Query","tenant_slug":"query-count","name":"Query","email":"q@example.com","password":"correct horse 42"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["token"]["token"])')
AUTH="Authorization: Bearer $TOKEN"; JSON='content-type: application/json'
data_id() { python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["id"])'; }
WH=$(curl -s -X POST $N/api/v1/warehouses -H "$AUTH" -H "$JSON" -d '{"code":"MAIN","name":"Main"}' | data_id)
for i in $(seq 1 25); do
  V=$(curl -s -X POST $N/api/v1/vendors -H "$AUTH" -H "$JSON" -d "{\"name\":\"V$i\",\"currency\":\"EUR\"}" | data_id)
  P=$(curl -s -X POST $N/api/v1/products -H "$AUTH" -H "$JSON" -d "{\"sku\":\"S$i\",\"name\":\"P$i\",\"unit_price\":90,\"currency\":\"EUR\"}" | data_id)
  curl -s -o /dev/null -X POST $N/api/v1/purchase-orders -H "$AUTH" -H "$JSON" -d "{\"vendor_id\":\"$V\",\"warehouse_id\":\"$WH\",\"lines\":[{\"product_id\":\"$P\",\"quantity\":10,\"unit_cost\":450}]}"
  curl -s -o /dev/null -X POST $N/api/v1/stock/adjustments -H "$AUTH" -H "$JSON" -d "{\"product_id\":\"$P\",\"warehouse_id\":\"$WH\",\"quantity\":100,\"reason\":\"count\"}"
done
st() { grep -i server-timing | sed 's/.*desc=//'; }
# Each GET twice: the first may be the one that reads the caller afresh
# (auth.principal_cache_ms), the second is counted.
q() { curl -s -o /dev/null "$@"; curl -s -D- -o /dev/null "$@" | st; }
echo "auth/me $(q $N/api/v1/auth/me -H "$AUTH")"
echo "products $(q "$N/api/v1/products?limit=25" -H "$AUTH")"
echo "products+total $(q "$N/api/v1/products?limit=25&include=total" -H "$AUTH")"
echo "vendors $(q "$N/api/v1/vendors?limit=25" -H "$AUTH")"
echo "pos $(q "$N/api/v1/purchase-orders?limit=25" -H "$AUTH")"
echo "graphql $(q $N/graphql -H "$AUTH" -H "$JSON" -d '{"query":"{ purchaseOrders(first: 25) { items { vendor { name } lines { product { sku stockLevels { onHand warehouseId } } } } } }"}')"
curl -s -o /dev/null $N/api/v1/auth/me -H "$AUTH"
echo "reserve $(curl -s -D- -o /dev/null -X POST $N/api/v1/reservations -H "$AUTH" -H "$JSON" -d "{\"reference\":\"r1\",\"lines\":[{\"product_id\":\"$P\",\"warehouse_id\":\"$WH\",\"quantity\":1}]}" | st)"
