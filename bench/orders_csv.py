#!/usr/bin/env python3
"""Write an orders CSV of N data rows (the seed's columns) to stdout.

Orders of 1 to 5 lines (3 on average, distinct SKUs), 10,000 customers, 2,000 SKUs, all in
EUR, placed over the last 90 days. Deterministic (seeded), so two runs
import the same file. Usage: bench/orders_csv.py ROWS [SKUS] > orders.csv
"""
import random
import sys
from datetime import datetime, timedelta, timezone

rows = int(sys.argv[1])
skus = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
rng = random.Random(7)
start = datetime(2026, 9, 1, tzinfo=timezone.utc)
out = sys.stdout
out.write("external_order_id,order_placed_at,currency,customer_id,customer_email,"
          "customer_name,product_sku,product_name,unit_price_cents,qty\n")
written = 0
order = 0
while written < rows:
    order += 1
    customer = rng.randrange(10_000)
    placed = (start + timedelta(seconds=rng.randrange(90 * 86_400))).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = f"BENCH-{order},{placed},EUR,C{customer},c{customer}@example.com,Customer {customer},"
    for sku in rng.sample(range(skus), min(rng.randint(1, 5), rows - written)):
        out.write(f"{head}SKU-{sku},Product {sku},{100 + sku % 900},{rng.randint(1, 4)}\n")
        written += 1
