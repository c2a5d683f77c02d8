"""Signature verification: every rule of SPEC.md's receiver section, without a server."""

import time

import pytest
import stripe

from webhook_service.core.errors import InvalidSignature
from webhook_service.core.signature import compute_signature, parse_header, sign, verify_signature

BODY = b'{"id": "evt_1", "object": "event"}'
SECRET = "whsec_unit_0123456789abcdef"
OLD = "whsec_unit_old_9876543210fedcba"
NOW = 1_790_000_000


def test_accepts_what_stripe_signs():
    # GIVEN a header made by stripe-python's own signer
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=NOW)
    # THEN our verifier accepts it and returns the timestamp
    assert verify_signature(BODY, header, [SECRET], 300, now=NOW) == NOW


def test_any_configured_secret_may_match():
    header = sign(BODY, OLD, NOW)
    assert verify_signature(BODY, header, [SECRET, OLD], 300, now=NOW) == NOW


def test_header_with_several_v1_entries_matches_any():
    # Stripe signs once per secret while a secret is being rolled.
    header = f"t={NOW},v1={compute_signature(BODY, NOW, OLD)},v1={compute_signature(BODY, NOW, SECRET)}"
    assert verify_signature(BODY, header, [SECRET], 300, now=NOW) == NOW


def test_wrong_secret_is_rejected():
    with pytest.raises(InvalidSignature, match="matches"):
        verify_signature(BODY, sign(BODY, OLD, NOW), [SECRET], 300, now=NOW)


def test_tampered_body_is_rejected():
    header = sign(BODY, SECRET, NOW)
    with pytest.raises(InvalidSignature):
        verify_signature(BODY + b" ", header, [SECRET], 300, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400])
def test_timestamps_outside_tolerance_in_either_direction_are_rejected(offset):
    header = sign(BODY, SECRET, NOW + offset)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_signature(BODY, header, [SECRET], 300, now=NOW)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_at_the_tolerance_edge_are_accepted(offset):
    assert verify_signature(BODY, sign(BODY, SECRET, NOW + offset), [SECRET], 300, now=NOW) == NOW + offset


def test_v0_only_header_is_a_downgrade_and_rejected():
    header = f"t={NOW},v0={compute_signature(BODY, NOW, SECRET)}"
    with pytest.raises(InvalidSignature, match="no v1"):
        verify_signature(BODY, header, [SECRET], 300, now=NOW)


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "Missing"),
        ("", "Missing"),
        ("garbage", "no timestamp"),
        ("t=abc,v1=00", "non-numeric"),
        (f"v1={'0' * 64}", "no timestamp"),
        ("t=1", "no v1"),
        ("t=1," + "v1=ab," * 1000, "too long"),
    ],
)
def test_malformed_headers_say_what_is_wrong(header, message):
    with pytest.raises(InvalidSignature, match=message):
        verify_signature(BODY, header, [SECRET], 300, now=NOW)


def test_parse_header_keeps_every_v1_and_ignores_other_schemes():
    assert parse_header("t=5, v1=aa ,v0=bb,v1=cc,x=1") == (5, ["aa", "cc"])


def test_real_clock_is_used_by_default():
    assert verify_signature(BODY, sign(BODY, SECRET), [SECRET], 300) == pytest.approx(time.time(), abs=5)
