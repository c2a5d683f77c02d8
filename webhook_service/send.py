"""`webhook-service send`: sign events as Stripe does and post them to a running receiver.

For trying a local stack end to end: a fixture file is sent as it is (sending it twice shows the
duplicate answer); `--type` sends a fresh event built from the newest committed fixture of that
type, with a new event id and `created` of now, so each send is a new delivery.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from webhook_service.core.signature import sign

#: Stripe gives an endpoint 10-30 s to answer; a local receiver answers in milliseconds.
TIMEOUT_SECONDS = 15


@dataclass
class Sent:
    """One delivery and what the receiver answered."""

    event_id: str
    event_type: str
    status: int
    body: str


def templates(fixtures_dir: Path) -> dict[str, Path]:
    """The newest fixture file of each event type (API versions sort by date)."""
    found: dict[str, Path] = {}
    for path in sorted(fixtures_dir.rglob("*.json")):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            found[event["type"]] = path  # later (newer) files win
    return found


def generate(event_type: str, fixtures_dir: Path, now: int | None = None) -> dict:
    """A new event of `event_type` from its template: fresh event id, created now.

    :raises LookupError: no fixture of that type to build from (names the known types).
    """
    known = templates(fixtures_dir)
    if event_type not in known:
        raise LookupError(
            f"no fixture of type {event_type!r} to build from; known types: {', '.join(sorted(known))}"
        )
    event = copy.deepcopy(json.loads(known[event_type].read_text()))
    event["id"] = "evt_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
    event["created"] = int(now if now is not None else time.time())
    return event


def post(url: str, body: bytes, secret: str, session: requests.Session | None = None) -> tuple[int, str]:
    """POST a signed body; returns (status, response text)."""
    http = session or requests.Session()
    response = http.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)},
        timeout=TIMEOUT_SECONDS,
    )
    return response.status_code, response.text


def send_all(url: str, secret: str, bodies: Iterable[bytes]) -> list[Sent]:
    """Post each body in turn over one connection."""
    sent = []
    with requests.Session() as session:
        for body in bodies:
            event = json.loads(body)
            status, text = post(url, body, secret, session)
            sent.append(Sent(str(event.get("id")), str(event.get("type")), status, text))
    return sent
