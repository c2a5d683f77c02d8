"""The one client for Stripe's API: resync's Events API pages and every fetch the worker makes.

Our own small client on `requests` rather than the SDK's `StripeClient` (docs/design.md §7):
handlers read plain dicts of any API version, and `StripeObject` is no longer a dict; every
request must first take a slot from the shared `RequestBudget`; and the retry policy below must
honour `Retry-After` and hand long waits back to the event's own retry instead of sleeping in a
worker. The SDK would need a custom HTTP client for the first two and still retries differently.

Retry policy (the only one for Stripe calls): connection errors, 409, 429 and 5xx are retried a
few times in the call with exponential backoff and full jitter, never sooner than `Retry-After`;
`Stripe-Should-Retry` overrides the status. When the attempts are spent, or the wait Stripe asks
for is longer than a worker should sleep, `StripeUnavailable` is raised: the event is then retried
later by the event retry policy, so a failed fetch is never a lost one.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
import requests

from webhook_service.core.config import Config, is_live_key
from webhook_service.core.errors import StripeNotFound, StripeUnavailable
from webhook_service.processing.stripe_budget import BudgetExhausted, RequestBudget

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.stripe.com"
#: Attempts per request inside one call; the event's retry takes over after that.
MAX_ATTEMPTS = 3
#: First backoff in seconds; doubles per attempt, with full jitter.
BASE_BACKOFF_SECONDS = 0.5
#: A worker sleeps at most this long for one retry; a longer Retry-After becomes the event's retry.
MAX_SLEEP_SECONDS = 10.0
#: Connect and read timeouts (seconds). With the budget's longest wait and the longest retry sleep,
#: they bound the gap between two `on_attempt` calls below PostgreSQL's idle-in-transaction limit.
REQUEST_TIMEOUT = (5, 20)
#: The list endpoints' maximum page size.
PAGE_SIZE = 100
#: Account limits per second (docs.stripe.com/rate-limits); configurable, see config.py.
LIVE_RATE, SANDBOX_RATE, ENDPOINT_RATE = 100.0, 25.0, 25.0

_ID_SEGMENT = re.compile(r"^[a-z]+_[A-Za-z0-9_]+$")


def endpoint_of(method: str, path: str) -> str:
    """The endpoint a request counts against: ids replaced by `{id}` (`GET /v1/invoices/{id}/lines`)."""
    parts = ["{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/")]
    return f"{method} {'/'.join(parts)}"


@dataclass
class CallStats:
    """What this client sent, for benchmarks and logs."""

    requests: int = 0
    retries: int = 0
    by_endpoint: dict[str, int] | None = None

    def count(self, endpoint: str) -> None:
        self.requests += 1
        self.by_endpoint = self.by_endpoint or {}
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1


class StripeClient:
    """GET requests to Stripe's API with the shared budget and the retry policy."""

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        budget: RequestBudget | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        max_sleep: float = MAX_SLEEP_SECONDS,
    ):
        self.api_key = api_key
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.budget = budget
        self.session = session or requests.Session()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.max_sleep = max_sleep
        self.stats = CallStats()

    def get(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        account: str | None = None,
        api_version: str | None = None,
        on_attempt: Callable[[], None] | None = None,
        check: Callable[[dict], str | None] | None = None,
    ) -> dict:
        """One GET, retried per the policy.

        :param account: a Connect account (`Stripe-Account`), for objects of connected accounts.
        :param api_version: render the object as this API version (`Stripe-Version`), e.g. the event's.
        :param on_attempt: called before each attempt (the worker keeps its transaction alive with it).
        :param check: what is wrong with a 200 answer's body for this request, or None: a body it
            names is retried like a gateway's page, never taken for Stripe's answer.
        :raises StripeNotFound: 404, the object does not exist (any more).
        :raises StripeUnavailable: anything else that kept failing; transient for the event.
        """
        endpoint = endpoint_of("GET", path)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if account:
            headers["Stripe-Account"] = account
        if api_version:
            headers["Stripe-Version"] = api_version
        for attempt in range(1, self.max_attempts + 1):
            if on_attempt is not None:
                on_attempt()
            self._take_slot(endpoint)
            if on_attempt is not None:
                on_attempt()
            self.stats.count(endpoint)
            retry_after: float | None = None
            status: int | None = None
            body: dict | None = None
            try:
                response = self.session.get(
                    self.api_base + path, params=list(params), headers=headers, timeout=REQUEST_TIMEOUT
                )
            except requests.RequestException as exc:
                reason, should_retry = type(exc).__name__, True
            else:
                body = _json_object(response)
                problem = check(body) if check is not None and body is not None else None
                if response.status_code == 200 and body is not None and problem is None:
                    return body
                if response.status_code == 404:
                    raise StripeNotFound(f"{endpoint}: {_error_message(response)}")
                status = response.status_code
                if status == 200:  # a proxy's or a gateway's page: nothing Stripe would send, transient
                    found = problem or "a body that is not a JSON object"
                    reason, should_retry = f"HTTP 200 with {found}", True
                else:
                    reason = f"HTTP {response.status_code}: {_error_message(response)}"
                    should_retry = _should_retry(response)
                retry_after = _retry_after(response)
            wait = self._backoff(attempt, retry_after)
            if should_retry and wait > self.max_sleep and attempt < self.max_attempts:
                asked = f"Stripe asked to wait {wait:.0f} s, more than this waits ({self.max_sleep:.0f} s)"
                reason = f"{asked}; {reason}"
            if not should_retry or attempt == self.max_attempts or wait > self.max_sleep:
                error = (body or {}).get("error")
                error = error if isinstance(error, dict) else {}
                raise StripeUnavailable(
                    f"{endpoint} failed after {attempt} attempt(s): {reason}",
                    retry_after=max(wait, retry_after or 0),
                    http_status=status,
                    stripe_code=error.get("code") if isinstance(error.get("code"), str) else None,
                    stripe_param=error.get("param") if isinstance(error.get("param"), str) else None,
                )
            self.stats.retries += 1
            logger.warning("%s: %s; retrying in %.2fs (attempt %d)", endpoint, reason, wait, attempt)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def get_page(self, path: str, params: Sequence[tuple[str, str]] = (), **options) -> dict:
        """One page of a list endpoint, checked to be one (`list_page_problem`), so a malformed
        answer is retried and then raised, never read as the list's empty end.

        :raises StripeNotFound, StripeUnavailable: as `get`.
        """
        return self.get(path, params, check=list_page_problem, **options)

    def retrieve(self, path: str, **options) -> dict | None:
        """GET an object, or None when Stripe no longer has it (a deleted draft, a pruned event)."""
        try:
            return self.get(path, **options)
        except StripeNotFound:
            return None

    def list_all(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        starting_after: str | None = None,
        before_page: Callable[[], None] | None = None,
        **opts,
    ) -> Iterator[dict]:
        """Every item of a list endpoint, page after page (`starting_after` the last id seen).

        :param before_page: called before each page is requested (a caller dating what it reads
            by the request, not the answer, so a webhook created meanwhile stays newer).
        """
        cursor = starting_after
        while True:
            page_params = [*params, ("limit", str(PAGE_SIZE))]
            if cursor:
                page_params.append(("starting_after", cursor))
            if before_page is not None:
                before_page()
            page = self.get_page(path, page_params, **opts)
            data = page["data"]
            yield from data
            if not page["has_more"] or not data:
                return
            cursor = data[-1]["id"]

    def _take_slot(self, endpoint: str) -> None:
        if self.budget is None:
            return
        try:
            self.budget.acquire(endpoint)
        except BudgetExhausted as exc:
            raise StripeUnavailable(str(exc), retry_after=5.0) from exc
        except redis.RedisError as exc:
            reason = f"the shared request budget is unreachable ({type(exc).__name__}): is REDIS_URL right?"
            raise StripeUnavailable(reason) from exc

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter on an exponential base, but never sooner than Stripe asked."""
        jittered = self.rng.uniform(0, BASE_BACKOFF_SECONDS * 2 ** (attempt - 1))
        return max(jittered, retry_after or 0.0)


def list_page_problem(body: dict) -> str | None:
    """What keeps `body` from being a page of a Stripe list (`data`: objects with ids, `has_more`:
    true or false), or None. `{}`, an error object or a string `data` would otherwise read as a
    finished list, and a backfill would mark a list done that it had not read."""
    data = body.get("data")
    if not isinstance(data, list):
        return "a list page whose data is not a list"
    if not isinstance(body.get("has_more"), bool):
        return "a list page without has_more true or false"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            return f"a list page whose data[{index}] is not an object with an id"
    return None


def _should_retry(response: requests.Response) -> bool:
    hint = response.headers.get("Stripe-Should-Retry")
    if hint is not None:
        return hint == "true"
    return response.status_code in (409, 429) or response.status_code >= 500


def _retry_after(response: requests.Response) -> float | None:
    raw = (response.headers.get("Retry-After") or "").strip()
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: Stripe sends seconds; fall back to our own backoff


def _json_object(response: requests.Response) -> dict | None:
    """The body as a JSON object, or None when it is not one (an HTML error page, a truncated body)."""
    try:
        body = response.json()
    except ValueError:  # requests' JSONDecodeError is one
        return None
    return body if isinstance(body, dict) else None


def _error_message(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.reason or "error"


def build_client(config: Config, connection: redis.Redis | None, **options) -> StripeClient | None:
    """The client for this configuration (None without STRIPE_API_KEY), its budget in `connection`.

    The budget's keys are named after a digest of the API key, so a live and a test key (which
    Stripe limits separately) get separate budgets, and the key itself never reaches Redis.
    """
    key = config.stripe_api_key
    if not key:
        return None
    rate = config.stripe_api_rate or (LIVE_RATE if is_live_key(key) else SANDBOX_RATE)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    budget = RequestBudget(
        rate, config.stripe_api_endpoint_rate, connection, prefix=f"stripe-budget:{digest}"
    )
    return StripeClient(key, config.stripe_api_base, budget=budget, **options)
