"""A request budget for Stripe's API, shared by every worker through Redis.

Stripe limits an account to 100 requests/s in live mode and 25 in a sandbox, and each endpoint
(`GET /v1/invoices/{id}`) to 25/s (docs.stripe.com/rate-limits). A backlog drained by many workers
must stay under both, so every request first takes a slot from two GCRA schedules (one for the
account, one for the endpoint) in a single Lua script: the budget is one counter however many
processes or machines share it. GCRA with no burst paces requests evenly, so no one-second window
ever holds more than the configured rate. Without Redis (the embedded dev queue) the same schedule
lives in the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

#: Slots are booked at most this far ahead; a caller that would wait longer gives up (the event retries).
MAX_BOOKING_SECONDS = 20.0

# KEYS: one schedule per limit. ARGV: now (µs), then for each key its interval (µs).
# Returns 0 when a slot was booked on every schedule, else the µs to wait (nothing booked).
_GCRA = """
local now = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  if tat - now > wait then wait = tat - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i + 1])
  local tat = tats[i] + interval
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return 0
"""


class BudgetExhausted(Exception):
    """No slot within `MAX_BOOKING_SECONDS`: Stripe's limit is spoken for; try the event later."""


class RequestBudget:
    """Paces requests: at most `rate` per second for the account and `endpoint_rate` per endpoint."""

    def __init__(
        self,
        rate: float,
        endpoint_rate: float,
        connection: redis.Redis | None = None,
        prefix: str = "stripe-budget",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0 or endpoint_rate <= 0:
            raise ValueError(f"rates must be positive, got {rate!r} and {endpoint_rate!r}")
        self.rate, self.endpoint_rate = rate, endpoint_rate
        self.prefix = prefix
        self.clock, self.sleep = clock, sleep
        self._redis = connection
        self._script = connection.register_script(_GCRA) if connection is not None else None
        self._local: dict[str, int] = {}
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds this budget made callers wait (benchmarks read it)

    def acquire(self, endpoint: str, max_wait: float = MAX_BOOKING_SECONDS) -> None:
        """Block until a request to `endpoint` may go out.

        :raises BudgetExhausted: no slot within `max_wait` seconds.
        :raises redis.RedisError: the shared budget is unreachable (the event retries).
        """
        keys = [f"{self.prefix}:account", f"{self.prefix}:endpoint:{endpoint}"]
        intervals = [int(1_000_000 / self.rate), int(1_000_000 / self.endpoint_rate)]
        deadline = self.clock() + max_wait
        while True:
            now_us = int(self.clock() * 1_000_000)
            wait_us = self._book(keys, now_us, intervals)
            if wait_us <= 0:
                return
            wait = wait_us / 1_000_000
            if self.clock() + wait > deadline:
                raise BudgetExhausted(f"no Stripe request slot for {endpoint} within {max_wait:.0f}s")
            self.waited += wait
            self.sleep(wait)

    def _book(self, keys: list[str], now_us: int, intervals: list[int]) -> int:
        if self._script is not None:
            return int(self._script(keys=keys, args=[now_us, *intervals]))
        with self._lock:
            tats = [max(self._local.get(key, 0), now_us) for key in keys]
            wait = max(tat - now_us for tat in tats)
            if wait > 0:
                return wait
            for key, tat, interval in zip(keys, tats, intervals, strict=True):
                self._local[key] = tat + interval
            return 0
