"""Hostile bytes at the receiver: whatever anyone sends, the answer is a 4xx or a 2xx, never a 5xx.

The receiver is the one unauthenticated endpoint; a 500 there is a Sentry event (and a page) that
anyone on the internet can trigger, and a refused valid delivery is an event Stripe gives up on.
"""

from __future__ import annotations

import io
import json
import time

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SECRET
from tests.helpers import examples
from webhook_service.core.models import StripeEvent
from webhook_service.core.signature import compute_signature, sign

pytestmark = pytest.mark.pgbouncer

MIB = 1024 * 1024
FUZZ = settings(
    max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _event(event_id: str = "evt_hostile_1") -> bytes:
    return json.dumps(
        {"id": event_id, "object": "event", "type": "invoice.paid", "created": 1_790_000_000,
         "livemode": False, "data": {"object": {"id": "in_hostile", "object": "invoice"}}}
    ).encode()  # fmt: skip


def _post(client, body: bytes, header: str | None):
    # Straight into the WSGI environ: the test client refuses some values (newlines) that a
    # server could still hand over, and a server hands over any byte as a latin-1 character.
    environ = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}
    return client.post(
        "/webhooks/stripe", data=body, headers={"Content-Type": "application/json"}, environ_overrides=environ
    )


def _logged(services) -> set[str]:
    with services.db.sessions() as session:
        return set(session.scalars(sa.select(StripeEvent.id)))


@pytest.mark.parametrize(
    "garbage",
    ["é", "\u00ff" * 64, "\u2603", "\ud800", "\x00", "ä" + "0" * 63],
    ids=["latin1", "latin1-64", "snowman", "lone-surrogate", "nul", "hex-like"],
)
def test_a_non_ascii_v1_value_is_a_400(client, services, garbage):
    body = _event()
    response = _post(client, body, f"t={int(time.time())},v1={garbage}")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_signature"
    assert _logged(services) == set()


@pytest.mark.parametrize(
    "garbage", ["é", "\u2603" * 10, "zz", "\ud800"], ids=["latin1", "snowmen", "short", "lone-surrogate"]
)
def test_a_valid_delivery_with_an_extra_garbage_v1_entry_is_accepted(client, services, garbage):
    body = _event()
    now = int(time.time())
    valid = compute_signature(body, now, SECRET)
    for header in (f"t={now},v1={garbage},v1={valid}", f"t={now},v1={valid},v1={garbage}"):
        response = _post(client, body, header)
        assert response.status_code == 200, response.get_json()
    assert _logged(services) == {"evt_hostile_1"}


@pytest.mark.parametrize(
    "t",
    ["١٧٩٠٠٠٠٠٠٠", "1_790_000_000", " ", "9" * 5000, "-5", "1e9"],
    ids=["arabic-digits", "underscores", "blank", "huge", "negative", "float"],
)
def test_timestamps_that_are_not_plain_digits_are_a_400(client, services, t):
    response = _post(client, _event(), f"t={t},v1={'0' * 64}")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_signature"


def _chunked(client, body: bytes, header: str):
    # As gunicorn and Werkzeug's server present a chunked request: no Content-Length, and
    # wsgi.input_terminated set (the stream ends where the body does).
    return client.post(
        "/webhooks/stripe",
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "Stripe-Signature": header,
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_one_mebibyte_gets_413(client, services):
    body = json.dumps({**json.loads(_event()), "padding": "x" * MIB}).encode()
    response = _chunked(client, body, sign(body, SECRET))
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert _logged(services) == set()


def test_a_chunked_body_within_the_limit_is_read_whole(client, services):
    body = json.dumps({**json.loads(_event()), "padding": "x" * (MIB - 4096)}).encode()
    assert len(body) < MIB
    response = _chunked(client, body, sign(body, SECRET))
    assert response.status_code == 200, response.get_json()
    assert _logged(services) == {"evt_hostile_1"}


_header_text = st.one_of(
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),  # what a WSGI server hands over
    st.text(max_size=200),  # any code point, surrogates included
)
_entry = st.one_of(
    st.tuples(st.sampled_from(["t", "v1", "v0", "", "T", "v1 "]), _header_text).map("=".join),
    _header_text,
)


@FUZZ
@given(entries=st.lists(_entry, max_size=6), body=st.binary(max_size=2000))
def test_fuzz_any_header_and_body_bytes_get_a_4xx(client, entries, body):
    response = _post(client, body, ",".join(entries))
    assert response.status_code in (400, 413), response.status_code


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=300), _json),
            "object": st.sampled_from(["event", "v2.core.event", "invoice"]) | _json,
            "type": st.sampled_from(["invoice.paid", "customer.updated", "x"]) | _json,
            "created": _json | st.integers(-(10**30), 10**30),
            "livemode": _json,
            "account": _json,
            "api_version": _json,
            "data": st.fixed_dictionaries({"object": _json}) | _json,
            "related_object": _json,
        },
    ),
    garbage=st.lists(_header_text, max_size=2),
)
def test_fuzz_signed_bodies_of_any_shape_get_a_4xx_or_a_2xx(client, fields, garbage):
    """Validly signed, so these reach the envelope and the event log: still never a 5xx."""
    body = json.dumps(fields).encode()
    header = sign(body, SECRET) + "".join(f",v1={g}" for g in garbage)
    response = _post(client, body, header)
    assert response.status_code in (200, 400), (response.status_code, response.get_json())


@FUZZ
@given(raw=st.binary(max_size=3000))
def test_fuzz_signed_bytes_get_a_4xx_or_a_2xx(client, raw):
    response = _post(client, raw, sign(raw, SECRET))
    assert response.status_code in (200, 400), (response.status_code, response.get_json())
