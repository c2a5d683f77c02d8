"""Stripe webhook signature verification on the raw body.

Hand-written rather than `stripe.Webhook.construct_event` because that builds a StripeObject tree
(~0.5 ms on a 3 KB event, see shared/PEERS.md), accepts only one secret, and accepts timestamps
from the far future. The scheme is Stripe's documented one: HMAC-SHA256 of "{t}.{body}", hex,
compared against every `v1` entry; other schemes (`v0`) are ignored to prevent downgrades.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from webhook_service.core.errors import InvalidSignature

#: Headers longer than this are not Stripe's: one t, a few v1 (secret rolling), one v0.
MAX_HEADER_LENGTH = 4096
#: Unix time in seconds has 10 digits until the year 2286.
MAX_TIMESTAMP_DIGITS = 15


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """Split a Stripe-Signature header into its timestamp and its `v1` signatures.

    :raises InvalidSignature: missing, unparsable, no timestamp or no v1 entry.
    """
    if not header:
        raise InvalidSignature("Missing Stripe-Signature header.", reason="signature_missing")
    if len(header) > MAX_HEADER_LENGTH:
        raise InvalidSignature("Stripe-Signature header is too long.")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # ASCII digits only: int() would also take "١٢" or " 1_0", and no real time has 16 digits.
            if not (value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS):
                raise InvalidSignature("Stripe-Signature header has a non-numeric timestamp.")
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None:
        raise InvalidSignature("Stripe-Signature header has no timestamp (t=…).")
    if not signatures:
        raise InvalidSignature("Stripe-Signature header has no v1 signature.")
    return timestamp, signatures


def compute_signature(payload: bytes, timestamp: int, secret: str) -> str:
    """HMAC-SHA256 hex digest of "{timestamp}.{payload}" under one secret."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Build a Stripe-Signature header value, as Stripe does when it sends (tests, demo, benchmarks)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={compute_signature(payload, ts, secret)}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    now: float | None = None,
) -> int:
    """Check that some configured secret signed this exact body, recently.

    Every pair (secret, v1 entry) is compared in constant time, so secret rolling and Connect
    endpoints (several secrets, several v1 entries) both work.

    :return: the signed timestamp.
    :raises InvalidSignature: no pair matches, or the timestamp differs from now by more than
        `tolerance` seconds in either direction.
    """
    timestamp, signatures = parse_header(header)
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e. a
    # 500, for one stray byte in a header anyone can send), and one garbage entry beside a valid
    # one must not spoil the delivery.
    candidates = [value.encode("utf-8", "surrogatepass") for value in signatures]
    matched = False
    for secret in secrets:
        expected = compute_signature(payload, timestamp, secret).encode("ascii")
        for candidate in candidates:
            # No early exit: the work done does not depend on which pair matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature(
            "No v1 signature in Stripe-Signature matches a configured webhook secret.",
            reason="signature_mismatch",
            timestamp=timestamp,
        )
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature(
            f"Stripe-Signature timestamp is {int(current - timestamp)} s from now; "
            f"the tolerance is {tolerance} s in either direction.",
            reason="timestamp_outside_tolerance",
            timestamp=timestamp,
        )
    return timestamp
