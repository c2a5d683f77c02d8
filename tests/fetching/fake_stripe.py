"""A small fake of Stripe's API over real HTTP, for what localstripe does not serve.

localstripe (tests/test_localstripe.py) serves invoices, their first page of lines, customers and
events, but refuses `starting_after` on invoice lines and has no prices, no credit notes and no
429s. This server holds objects put in by the test and serves them as Stripe's list and retrieve
endpoints would (10 embedded lines with `has_more`, pages of `limit` after `starting_after`),
answers scripted failures (429 with `Retry-After`, 500) and records every request. Objects put
in for a Connect account are listed only to requests whose `Stripe-Account` header names it.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

#: How many lines Stripe embeds in an invoice or credit note it returns.
EMBEDDED_LINES = 10


@dataclass
class Failure:
    """Answer the next `times` requests whose path starts with `prefix` with this status."""

    prefix: str
    status: int
    times: int
    retry_after: str | None = None
    should_retry: str | None = None
    #: Answer this many matching requests normally first (fail the second page, not the first).
    after: int = 0
    #: Send these bytes as the body instead of Stripe's JSON error (a proxy's HTML page).
    raw: bytes | None = None


@dataclass
class Recorded:
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    status: int = 0
    #: time.monotonic() when the request arrived.
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeState:
    objects: dict[str, dict] = field(default_factory=dict)  # "/v1/invoices/in_1" → object
    lines: dict[str, list[dict]] = field(default_factory=dict)  # "/v1/invoices/in_1/lines" → all lines
    events: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    api_key: str = "sk_test_fake"
    #: Like Stripe's limiter: more than this many requests in any one second get a 429.
    limit_per_second: int | None = None
    granted: list[float] = field(default_factory=list)
    rate_limited: int = 0
    #: Seconds each answer takes (Stripe's own take tens to hundreds of milliseconds).
    latency: float = 0.0
    #: Object path → the Connect account it belongs to (absent: the platform's).
    owners: dict[str, str] = field(default_factory=dict)


class FakeStripe:
    """Start with `with FakeStripe() as fake:`; `fake.url` is the API base."""

    def __init__(self):
        self.state = FakeState()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeStripe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ---- what the test puts in ---------------------------------------------------------
    def put_invoice(self, invoice: dict, lines: list[dict] | None = None, account: str | None = None) -> None:
        """Store an invoice; `lines` is its full list (default: the lines it carries)."""
        self._put("invoices", invoice, lines, account)

    def put_credit_note(
        self, note: dict, lines: list[dict] | None = None, account: str | None = None
    ) -> None:
        self._put("credit_notes", note, lines, account)

    def put(self, kind: str, obj: dict, account: str | None = None) -> None:
        with self.lock:
            self.state.objects[f"/v1/{kind}/{obj['id']}"] = copy.deepcopy(obj)
            self._own(f"/v1/{kind}/{obj['id']}", account)

    def requests_to(self, prefix: str) -> list[Recorded]:
        """The requests whose path starts with `prefix`, in arrival order."""
        with self.lock:
            return [r for r in self.state.requests if r.path.startswith(prefix)]

    def fail(
        self, prefix: str, status: int, times: int = 1, retry_after=None, should_retry=None, after: int = 0,
        raw: bytes | None = None,
    ) -> None:  # fmt: skip
        with self.lock:
            self.state.failures.append(Failure(prefix, status, times, retry_after, should_retry, after, raw))

    def delete(self, kind: str, object_id: str) -> None:
        """Remove an object, as deleting it in Stripe would (a later `starting_after` at it is a 400)."""
        with self.lock:
            self.state.objects.pop(f"/v1/{kind}/{object_id}", None)
            self.state.lines.pop(f"/v1/{kind}/{object_id}/lines", None)

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.state.requests]

    def _put(self, kind: str, obj: dict, lines: list[dict] | None, account: str | None = None) -> None:
        path = f"/v1/{kind}/{obj['id']}"
        full = copy.deepcopy(lines if lines is not None else (obj.get("lines") or {}).get("data") or [])
        with self.lock:
            self.state.objects[path] = copy.deepcopy(obj)
            self.state.lines[path + "/lines"] = full
            self._own(path, account)

    def _own(self, path: str, account: str | None) -> None:
        if account:
            self.state.owners[path] = account
        else:
            self.state.owners.pop(path, None)

    # ---- what the server answers -------------------------------------------------------
    def answer(
        self, path: str, params: list[tuple[str, str]], account: str | None = None
    ) -> tuple[int, dict | bytes, dict]:
        with self.lock:
            if self.state.limit_per_second is not None:
                now = time.monotonic()
                recent = [t for t in self.state.granted if t > now - 1.0]
                if len(recent) >= self.state.limit_per_second:
                    self.state.rate_limited += 1
                    return 429, {"error": {"message": "Too many requests hit the API too quickly."}}, {}
                self.state.granted = recent + [now]
            for failure in self.state.failures:
                if failure.times > 0 and path.startswith(failure.prefix):
                    if failure.after > 0:
                        failure.after -= 1
                        continue
                    failure.times -= 1
                    headers = {}
                    if failure.retry_after is not None:
                        headers["Retry-After"] = failure.retry_after
                    if failure.should_retry is not None:
                        headers["Stripe-Should-Retry"] = failure.should_retry
                    scripted = {"error": {"message": "scripted failure"}}
                    return failure.status, failure.raw if failure.raw is not None else scripted, headers
            query = dict(params)
            expand = {value for name, value in params if name == "expand[]"}
            if path in self.state.lines:
                items = self.state.lines[path]
            elif path == "/v1/events":
                items = self.state.events
            elif path in _LISTABLE:
                items = [_expanded(obj, expand, "data.") for obj in self._listed(path, query, account)]
            else:
                items = None
            if items is not None:
                after = query.get("starting_after")
                if after is not None and after not in {item["id"] for item in items}:
                    return 400, _resource_missing(after), {}  # Stripe's answer for a deleted cursor
                return 200, _page(path, items, query), {}
            obj = self.state.objects.get(path)
            if obj is None:
                return 404, {"error": {"message": f"No such object: {path.rsplit('/', 1)[-1]}"}}, {}
            obj = _expanded(copy.deepcopy(obj), expand)
            if path + "/lines" in self.state.lines:
                full = self.state.lines[path + "/lines"]
                obj["lines"] = _page(path + "/lines", full, {"limit": str(EMBEDDED_LINES)})
            return 200, obj, {}

    def _listed(self, path: str, query: dict, account: str | None = None) -> list[dict]:
        """The stored objects of a list endpoint, newest first as Stripe lists them, filtered by
        `created[gte|gt|lte|lt]` and `customer`; invoices embed their first lines as retrieved."""
        found = []
        for key, obj in self.state.objects.items():
            if key.rsplit("/", 1)[0] != path or self.state.owners.get(key) != account:
                continue
            created = obj.get("created") or 0
            if any(
                name in query and not compare(created, int(query[name]))
                for name, compare in _CREATED_FILTERS.items()
            ):
                continue
            if "customer" in query and obj.get("customer") != query["customer"]:
                continue
            obj = copy.deepcopy(obj)
            if key + "/lines" in self.state.lines:
                full = self.state.lines[key + "/lines"]
                obj["lines"] = _page(key + "/lines", full, {"limit": str(EMBEDDED_LINES)})
            found.append(obj)
        return sorted(found, key=lambda o: (o.get("created") or 0, o["id"]), reverse=True)


#: List endpoints served from the stored objects (`GET /v1/invoices?created[gte]=…&customer=…`).
_LISTABLE = ("/v1/invoices", "/v1/customers", "/v1/credit_notes")
_CREATED_FILTERS = {
    "created[gte]": lambda value, bound: value >= bound,
    "created[gt]": lambda value, bound: value > bound,
    "created[lte]": lambda value, bound: value <= bound,
    "created[lt]": lambda value, bound: value < bound,
}


#: Fields Stripe includes only when asked with `expand[]` (`data.` prefixed on a list).
_INCLUDABLE = {"customer": ("invoice_credit_balance",)}


def _expanded(obj: dict, expand: set[str], prefix: str = "") -> dict:
    """The object without the includable fields that were not asked for."""
    for name in _INCLUDABLE.get(obj.get("object") or "", ()):
        if prefix + name not in expand:
            obj.pop(name, None)
    return obj


def _resource_missing(object_id: str) -> dict:
    return {
        "error": {
            "code": "resource_missing", "param": "starting_after", "type": "invalid_request_error",
            "message": f"No such object: '{object_id}'",
        }
    }  # fmt: skip


def _page(url: str, items: list[dict], query: dict) -> dict:
    limit = int(query.get("limit", "10"))
    start = 0
    if "starting_after" in query:
        ids = [item["id"] for item in items]
        start = ids.index(query["starting_after"]) + 1
    data = items[start : start + limit]
    return {
        "object": "list",
        "url": url,
        "has_more": start + limit < len(items),
        "data": copy.deepcopy(data),
        "total_count": len(items),
    }


def _handler_for(fake: FakeStripe):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            params = parse_qsl(parts.query, keep_blank_values=True)
            record = Recorded(parts.path, params, dict(self.headers.items()))
            with fake.lock:
                fake.state.requests.append(record)
            if fake.state.latency:
                time.sleep(fake.state.latency)
            if self.headers.get("Authorization") != f"Bearer {fake.state.api_key}":
                # As Stripe words it: the key's last four characters are in the message.
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                message = f"Invalid API Key provided: {sent[:8]}****{sent[-4:]}"
                status, body, headers = (
                    401,
                    {"error": {"message": message, "type": "invalid_request_error"}},
                    {},
                )
            else:
                status, body, headers = fake.answer(parts.path, params, self.headers.get("Stripe-Account"))
            record.status = status
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler
