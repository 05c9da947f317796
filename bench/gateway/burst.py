#!/usr/bin/env python3
"""Cold-burst client: N concurrent GETs of one URL, all released at once.

Usage: burst.py URL [N] [CACHE_HEADER]

Opens one connection per request (threads + http.client), waits on a barrier so all
requests go out together, and prints one JSON line:
  {"n":200,"ok":200,"statuses":{"200":200},"errors":[],"cache":{"hit":199,...},
   "wall_ms":...,"p50_ms":...,"max_ms":...}
Exits 1 unless every request got HTTP 200.
"""

import http.client
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> int:
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    cache_header = sys.argv[3] if len(sys.argv) > 3 else "Cache-Status"
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    target = parts.path + ("?" + parts.query if parts.query else "")

    barrier = threading.Barrier(n + 1)
    statuses: Counter = Counter()
    cache: Counter = Counter()
    errors: list = []
    times: list = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.connect()  # connect before the barrier: only the requests race
        except OSError as e:
            with lock:
                errors.append(f"connect: {e}")
            barrier.wait()
            return
        barrier.wait()
        t0 = time.monotonic()
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            resp.read()
            dt = (time.monotonic() - t0) * 1000
            value = resp.getheader(cache_header) or "-"
            # Cache-Status "sluice; fwd=miss; collapsed" -> "fwd=miss; collapsed"
            # (cache name and ttl/detail dropped); nginx X-Cache "HIT" -> "hit"
            fields = [f.strip().lower() for f in value.split(";")]
            if len(fields) > 1:
                fields = fields[1:]
            label = "; ".join(f for f in fields if not f.startswith(("ttl=", "detail=")))
            with lock:
                statuses[str(resp.status)] += 1
                cache[label] += 1
                times.append(dt)
        except Exception as e:  # noqa: BLE001 - report every failure kind
            with lock:
                errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join(60)
    wall = (time.monotonic() - start) * 1000
    times.sort()
    out = {
        "n": n,
        "ok": statuses.get("200", 0),
        "statuses": dict(statuses),
        "errors": errors[:5],
        "error_count": len(errors),
        "cache": dict(cache),
        "wall_ms": round(wall, 1),
        "p50_ms": round(times[len(times) // 2], 1) if times else None,
        "max_ms": round(times[-1], 1) if times else None,
    }
    print(json.dumps(out))
    return 0 if out["ok"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
