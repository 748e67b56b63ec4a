"""The same measurements as bench-limiter, for the Python `limits` library's
moving-window strategy on the same Redis: acquire latency and throughput,
and exactness at the window's edge."""

import statistics
import threading
import time
import uuid

from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

storage = RedisStorage("redis://127.0.0.1:6379")
limiter = MovingWindowRateLimiter(storage)


def latency(concurrency, per_thread):
    item = RateLimitItemPerSecond(10**9, 1)
    key = f"bench-{uuid.uuid4().hex[:10]}"
    times = []
    lock = threading.Lock()

    def run():
        local = []
        for _ in range(per_thread):
            t = time.perf_counter()
            assert limiter.hit(item, key)
            local.append(time.perf_counter() - t)
        with lock:
            times.extend(local)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    times.sort()
    p50 = times[int((len(times) - 1) * 0.5)] * 1e6
    p99 = times[int((len(times) - 1) * 0.99)] * 1e6
    print(f"limits moving-window  concurrency {concurrency:>2}  acquires {len(times):>6}  per second {len(times) / elapsed:>7.0f}  p50 {p50:>6.0f} µs  p99 {p99:>6.0f} µs")


def exactness(limit, window, run):
    item = RateLimitItemPerSecond(limit, window)
    key = f"bench-{uuid.uuid4().hex[:10]}"
    grants = []
    lock = threading.Lock()
    started = time.perf_counter()

    def hammer():
        local = []
        while time.perf_counter() - started < run:
            before = time.perf_counter() - started
            if limiter.hit(item, key):
                local.append((before + time.perf_counter() - started) / 2)
        with lock:
            grants.extend(local)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grants.sort()
    most = 0
    j = 0
    for i in range(len(grants)):
        while j < len(grants) and grants[j] < grants[i] + window:
            j += 1
        most = max(most, j - i)
    ideal = -(-run // window) * limit
    print(f"limits exactness  limit {limit} per {window:.1f} s  4 clients hammering {run:.1f} s  granted {len(grants)}  (at most {ideal:.0f} possible)  most in any window: {most} on the client's clock (round-trip midpoints; limits stamps hits with the client's clock)")


for c in (1, 8, 32):
    latency(c, 20000 // c)
exactness(50, 1, 3.5)
