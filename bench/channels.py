"""The measuring half of bench/channels.sh: talks to a running Nexus
(BASE, TOKEN, WAREHOUSE) and to the fake stores' stats (STATS).

  python3 bench/channels.py push CHANGES   full push, then CHANGES timed stock changes
  python3 bench/channels.py limited WINDOW full push under the default limits for WINDOW s
"""

import json
import os
import sys
import time
import urllib.request

BASE, TOKEN, WAREHOUSE, STATS = (os.environ[k] for k in ("BASE", "TOKEN", "WAREHOUSE", "STATS"))
CHANNELS = ["shopify", "woocommerce", "amazon", "etsy"]
# Nexus's default rate_limit of each channel (per second, burst).
LIMITS = {"shopify": (2, 40), "woocommerce": (25, 100), "amazon": (1, 10), "etsy": (10, 50)}


def call(method, url, body=None, auth=True):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if auth:
        req.add_header("authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.load(res)


def api(method, path, body=None):
    return call(method, BASE + path, body)


def stats(sku=None):
    return call("GET", STATS + "/stats" + (f"?sku={sku}" if sku else ""), auth=False)


def now_ms():
    return time.time() * 1000


def connect():
    """The four stores, connected to MAIN and imported; their connection ids."""
    stores = call("GET", STATS + "/stores", auth=False)
    ids = {}
    for channel in CHANNELS:
        s = dict(stores[channel])
        base_url = s.pop("base_url")
        location = s.pop("remote_location_id", None)
        s.pop("token_url", None)
        body = {"channel": channel, "name": channel, "base_url": base_url, "currency": "EUR",
                "credentials": s, "warehouse_id": WAREHOUSE, "safety_buffer": 0}
        if location:
            body["remote_location_id"] = location
        ids[channel] = api("POST", "/api/v1/channel-connections", body)["data"]["id"]
    for channel, c in ids.items():
        started = time.time()
        run = api("POST", f"/api/v1/channel-connections/{c}/imports", {})["data"]
        while run["status"] not in ("succeeded", "failed"):
            time.sleep(0.2)
            run = api("GET", f"/api/v1/channel-connections/{c}/imports/{run['id']}")["data"]
        print(f"import {channel}: {run['status']}, {run['listed']} listed, {run['linked']} linked, "
              f"{run['created']} created, {time.time() - started:.1f} s", flush=True)
    return ids


def full_push(ids):
    """A full push of every connection at once; its start (Unix ms) and runs."""
    start = now_ms()
    return start, {ch: api("POST", f"/api/v1/channel-connections/{c}/sync", {})["data"]["id"]
                   for ch, c in ids.items()}


def wait_runs(ids, runs):
    for channel, run in runs.items():
        path = f"/api/v1/channel-connections/{ids[channel]}/sync-runs/{run}"
        while (r := api("GET", path)["data"])["status"] not in ("succeeded", "failed"):
            time.sleep(0.2)
        print(f"  {channel}: {r['status']}, {r['done']} done, {r['failed']} failed", flush=True)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def push(changes):
    ids = connect()
    before = stats()
    print("== full push of every store at once, limits lifted", flush=True)
    start, runs = full_push(ids)
    wait_runs(ids, runs)
    after = stats()
    total, last = 0, start
    for channel in CHANNELS:
        writes = [w for w in after[channel]["writes"] if w[2] >= start]
        seconds = (max(w[2] for w in writes) - start) / 1000 if writes else 0
        total += len(writes)
        last = max([last] + [w[2] for w in writes])
        requests = after[channel]["requests"] - before[channel]["requests"]
        print(f"  {channel}: {len(writes)} SKUs written in {seconds:.2f} s "
              f"({len(writes) / max(seconds, 1e-9):,.0f}/s, {requests} requests)")
    seconds = (last - start) / 1000
    print(f"all four: {total} SKU pushes in {seconds:.2f} s = {total / seconds:,.0f} SKU pushes/s")

    print(f"== {changes} stock changes, each timed until its ATP is on all four stores", flush=True)
    products = api("GET", "/api/v1/products?limit=100&sort=-created_at")["data"][:50]
    on_hand = {}
    latencies = {ch: [] for ch in CHANNELS}
    every = []
    for i in range(changes):
        p = products[i % len(products)]
        if p["id"] not in on_hand:
            level = api("GET", f"/api/v1/stock-levels?product_id={p['id']}&warehouse_id={WAREHOUSE}")["data"]
            on_hand[p["id"]] = level[0]["on_hand"] - level[0]["reserved"] if level else 0
        expected = on_hand[p["id"]] + 1
        t0 = now_ms()
        api("POST", "/api/v1/stock/adjustments", {"product_id": p["id"], "warehouse_id": WAREHOUSE,
                                                   "quantity": 1, "reason": "bench"})
        on_hand[p["id"]] = expected
        landed = {}
        deadline = time.time() + 30
        while len(landed) < 4:
            if time.time() > deadline:
                sys.exit(f"change {i} ({p['sku']} -> {expected}) did not land everywhere: {landed}")
            s = stats(p["sku"])
            for ch in CHANNELS:
                hit = [w[2] for w in s[ch]["writes"] if w[1] == expected and w[2] >= t0 - 5]
                if hit and ch not in landed:
                    landed[ch] = min(hit) - t0
            time.sleep(0.002)
        for ch, ms in landed.items():
            latencies[ch].append(ms)
        every.append(max(landed.values()))
    for ch in CHANNELS:
        print(f"  {ch}: p50 {percentile(latencies[ch], 50):.0f} ms, p99 {percentile(latencies[ch], 99):.0f} ms")
    print(f"on all four: p50 {percentile(every, 50):.0f} ms, p99 {percentile(every, 99):.0f} ms, "
          f"max {max(every):.0f} ms over {changes} changes")


def limited(window):
    ids = connect()
    print(f"== full push of every store at once, default limits, measured {window} s "
          "(from 5 s after the start, past the buckets' bursts)", flush=True)
    start, _runs = full_push(ids)
    time.sleep(max(0.0, start / 1000 + 5 - time.time()))
    a = stats()
    time.sleep(window)
    b = stats()
    for ch in CHANNELS:
        requests = b[ch]["requests"] - a[ch]["requests"]
        refused = b[ch]["throttled"]
        writes = len(b[ch]["writes"]) - len(a[ch]["writes"])
        per_second, burst = LIMITS[ch]
        print(f"  {ch}: {requests / window:.2f} requests/s (limit {per_second}/s, burst {burst}), "
              f"{writes / window:.2f} SKUs/s, refused since the imports began: {refused}")


if __name__ == "__main__":
    {"push": push, "limited": limited}[sys.argv[1]](int(sys.argv[2]))
