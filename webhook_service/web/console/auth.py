"""Logging in with an OPERATOR_KEYS key, and who the operator of a request is.

A session names the operator and holds a fingerprint of the key used (an HMAC under the session
secret, never the key). Each request checks that fingerprint against the configured keys, so
removing a key from OPERATOR_KEYS logs its sessions out at once, whatever the cookie says.

Failed logins are counted per client address in Redis (shared by every process) and, while
Redis is unreachable, in this process alone; past the limit the login form answers 429.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass

import redis
from flask import current_app, flash, g, redirect, render_template, request, session, url_for

from webhook_service.core.config import OperatorKey
from webhook_service.processing import audit
from webhook_service.web.console.blueprint import bp
from webhook_service.web.console.security import client_address
from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

#: Failed logins allowed per client address per window; keys are long and random, so this only
#: stops brute force and keeps the log quiet.
MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 300
#: A session lasts a working day; then the operator logs in again.
SESSION_HOURS = 12
#: Pages anyone may open: the login form and the stylesheet.
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})


@dataclass(frozen=True)
class Operator:
    name: str

    @property
    def actor(self) -> str:
        """How the audit trail names this operator."""
        return f"console:{self.name}"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def match_key(presented: str, keys: tuple[OperatorKey, ...]) -> OperatorKey | None:
    """The entry whose key is `presented`; every key is compared, in constant time, on digests
    (so neither which key matched nor the keys' lengths show in the timing)."""
    wanted = _digest(presented)
    found = None
    for entry in keys:
        if hmac.compare_digest(wanted, _digest(entry.key)) and found is None:
            found = entry
    return found


def _fingerprint(key: str) -> str:
    secret = current_app.secret_key or b""
    secret = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def current_operator() -> Operator | None:
    """The logged-in operator, or None (no session, expired, or its key was removed)."""
    if "operator" in g:
        return g.operator
    operator = None
    name, fingerprint = session.get("operator"), session.get("key_fingerprint")
    started = session.get("since", 0)
    if name and fingerprint and time.time() - started < SESSION_HOURS * 3600:
        for entry in get_services().config.operator_keys:
            if entry.name == name and hmac.compare_digest(fingerprint, _fingerprint(entry.key)):
                operator = Operator(name)
    g.operator = operator
    return operator


def acting_operator() -> Operator:
    """The operator of a request that `require_operator` let through (every action has one)."""
    operator = current_operator()
    if operator is None:  # unreachable past require_operator; never act anonymously
        raise RuntimeError("console action without a logged-in operator")
    return operator


class LoginThrottle:
    """Failed attempts per client address within a window (Redis, or this process as a fallback)."""

    def __init__(self, limit: int = MAX_FAILURES, window: int = FAILURE_WINDOW_SECONDS):
        self.limit, self.window = limit, window
        self._local: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(address: str) -> str:
        return f"webhook-service:console:login-failures:{address}"

    def _local_recent(self, address: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        recent = [t for t in self._local.get(address, []) if t > cutoff]
        self._local[address] = recent
        return recent

    def blocked(self, address: str) -> bool:
        try:
            count = int(get_services().queue.connection.get(self._key(address)) or 0)
        except redis.RedisError:
            with self._lock:
                count = len(self._local_recent(address))
        return count >= self.limit

    def failed(self, address: str) -> None:
        connection = get_services().queue.connection
        try:
            pipe = connection.pipeline()
            pipe.incr(self._key(address))
            pipe.expire(self._key(address), self.window, nx=True)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._local_recent(address).append(time.monotonic())

    def succeeded(self, address: str) -> None:
        try:
            get_services().queue.connection.delete(self._key(address))
        except redis.RedisError:
            pass
        with self._lock:
            self._local.pop(address, None)


throttle = LoginThrottle()


def _safe_next(target: str | None) -> str:
    """Only a console path may follow a login (no open redirect to another site)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.events_list")


@bp.before_request
def require_operator():
    """No console page without a logged-in operator; the console is closed without OPERATOR_KEYS."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not get_services().config.operator_keys:
        return render_template("console/closed.html"), 403
    if current_operator() is None:
        if request.method == "GET":
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        return render_template("console/login.html", message="Your session has ended: log in again."), 401
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form: one field, an operator key."""
    keys = get_services().config.operator_keys
    if not keys:
        return render_template("console/closed.html"), 403
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_operator() is not None:
            return redirect(target)
        return render_template("console/login.html", next=target)
    address = client_address()
    if throttle.blocked(address):
        logger.warning(
            "console login refused: too many failed attempts", extra={"fields": {"client": address}}
        )
        message = f"Too many failed attempts. Wait {FAILURE_WINDOW_SECONDS // 60} minutes and try again."
        return render_template("console/login.html", next=target, error=message), 429
    entry = match_key(request.form.get("key", ""), keys)
    if entry is None:
        throttle.failed(address)
        logger.warning("console login failed: unknown key", extra={"fields": {"client": address}})
        return render_template("console/login.html", next=target, error="That key is not valid."), 401
    throttle.succeeded(address)
    session.clear()  # a fresh session (and CSRF token): nothing from before the login carries over
    session.permanent = True
    session.update(operator=entry.name, key_fingerprint=_fingerprint(entry.key), since=int(time.time()))
    operator = Operator(entry.name)
    g.operator = operator
    audit.record_action(get_services().db, actor=operator.actor, action="console.login")
    return redirect(target)


@bp.post("/logout")
def logout():
    operator = current_operator()
    if operator is not None:
        audit.record_action(get_services().db, actor=operator.actor, action="console.logout")
    session.clear()
    g.operator = None
    flash("You are logged out.")
    return redirect(url_for("console.login"))
