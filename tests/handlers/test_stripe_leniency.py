"""What Stripe's own schemas allow is mirrored, end to end; what they do not still fails.

Each case is an era fixture changed the way a real payload of that era can be (issue #25: null
tax lists, `status: "deleted"`, metadata values that are not strings, empty-string ids),
recorded in the event log and drained by the real drain on the test database; the mirrored rows
are then read back. tests/spec/test_spec_conformance.py checks the same leniency field by field
against every version's schema; tests/test_hostile_payloads.py keeps the strictness.
"""

from __future__ import annotations

import copy
import json

import era_shapes as era
import pytest

from tests.conftest import clean_tables
from tests.handlers.test_invoices import history, load_invoice
from webhook_service.core.models import Customer, StripeEvent
from webhook_service.processing import drain, eventlog
from webhook_service.processing.envelope import parse_envelope

pytestmark = pytest.mark.postgresql_only


def deliver(services, *events: dict) -> dict[str, tuple]:
    """Record the events as the receiver does, drain them, and return each one's outcome."""
    clean_tables(services.db.engine)
    for event in events:
        body = json.dumps(event).encode()
        eventlog.record_event(services.db.engine, parse_envelope(body), body)
    drain.drain(services.db, services.queue, 50)
    with services.db.sessions() as session:
        return {e["id"]: _outcome(session.get(StripeEvent, e["id"])) for e in events}


def _outcome(row) -> tuple:
    return (row.status, row.last_error) if row is not None else ("missing", None)


def event(version: str, event_type: str, event_id: str | None = None, **changes) -> dict:
    loaded = copy.deepcopy(era.load(version, event_type))
    loaded["data"]["object"].update(changes)
    if event_id:
        loaded["id"] = event_id
    return loaded


PROCESSED = ("processed", None)


# 1. Null lists -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, field", [("2026-10-28.endive", "total_taxes"), ("2019-03-14", "total_tax_amounts")]
)
def test_a_null_tax_list_mirrors_the_invoice_with_no_tax_stated(services, version, field):
    """`total_taxes` (basil+) and `total_tax_amounts` (2019-03-14 to 2020-03-02) are nullable in
    Stripe's schemas: the invoice mirrors with every amount; its tax is `total − total_excluding_tax`
    where the payload has both (2026), else unknown (as `tax: null`), never a made-up 0."""
    paid = event(version, "invoice.paid", **{field: None})
    paid["data"]["object"].pop("tax", None)
    assert deliver(services, paid) == {paid["id"]: PROCESSED}
    inv = load_invoice(services, era.INVOICE)
    tax = era.TAX if version >= "2022-11-15" else None  # `total_excluding_tax` since 2022-11-15
    assert (inv.status, inv.subtotal, inv.tax, inv.total, inv.amount_paid) == (
        "paid", era.SUBTOTAL, tax, era.TOTAL, era.TOTAL,
    )  # fmt: skip
    assert [line.amount for line in inv.lines] == [9900, 6170, -1450]


# 2. status: deleted ------------------------------------------------------------------------


def test_a_deleted_status_is_a_deleted_draft_in_any_order(services):
    """`deleted` is in the invoice status enum from 2019-03-14 on: the draft is marked deleted
    (as `invoice.deleted` marks it), its status stays draft, and a later-delivered draft
    snapshot never revives it."""
    created = event("2020-08-27", "invoice.created")
    deleted = event("2020-08-27", "invoice.updated", "evt_1EraDeletedStatus00000", status="deleted")
    deleted["created"] = created["created"] + 60
    for order in ([created, deleted], [deleted, created], [deleted]):
        outcomes = deliver(services, *order)
        assert set(outcomes.values()) == {PROCESSED}, outcomes
        inv = load_invoice(services, era.INVOICE)
        assert (inv.status, inv.stripe_status, history(inv)) == ("draft", "draft", [(None, "draft")])
        assert inv.deleted_at is not None and int(inv.deleted_at.timestamp()) == deleted["created"]


def test_a_deleted_status_never_moves_an_invoice_backwards(services):
    """Statuses are monotonic: a `deleted` snapshot after a finalized one marks the row deleted
    but leaves it open, whatever the delivery order."""
    finalized = event("2020-08-27", "invoice.finalized")
    deleted = event("2020-08-27", "invoice.updated", "evt_1EraDeletedStatus00000", status="deleted")
    for order in ([finalized, deleted], [deleted, finalized]):
        assert set(deliver(services, *order).values()) == {PROCESSED}
        inv = load_invoice(services, era.INVOICE)
        assert (inv.status, history(inv)) == ("open", [(None, "draft"), ("draft", "open")])
        assert inv.deleted_at is not None


# 3. Metadata -------------------------------------------------------------------------------

JUNK_METADATA = {"flag": True, "count": 5, "ratio": 0.5, "nothing": None, "nested": {"a": [1]}}


@pytest.mark.parametrize("version", ["2017-08-15", "2024-06-20", "2026-10-28.endive"])
def test_metadata_values_the_service_does_not_use_never_fail_an_event(services, version):
    """Stripe's 2017-08-15 to 2018-05-21 schemas type metadata as any object: booleans, numbers,
    nulls and objects beside the keys we read leave the customer's entity as its strings say."""
    customer = event(version, "customer.updated")
    customer["data"]["object"]["metadata"].update(JUNK_METADATA)
    paid = event(version, "invoice.paid", metadata=dict(JUNK_METADATA))
    for line in paid["data"]["object"]["lines"]["data"]:
        line["metadata"] = dict(JUNK_METADATA)
    assert set(deliver(services, customer, paid).values()) == {PROCESSED}
    with services.db.sessions() as session:
        row = session.get(Customer, era.CUSTOMER)
        assert (row.entity_type, row.entity_id, row.credit_balance) == ("company", "org_42", era.CREDIT)
    assert load_invoice(services, era.INVOICE).status == "paid"


@pytest.mark.parametrize("value", [42, True, None, ["org_42"]])
def test_a_non_string_under_a_key_in_use_reads_as_absent(services, value):
    """A value Stripe could not have stored (its metadata values are strings) under the entity
    keys: no entity id, the configured default type; the event is processed."""
    customer = event("2024-06-20", "customer.updated")
    customer["data"]["object"]["metadata"] = {"entity_type": value, "portal_entity_id": value}
    assert deliver(services, customer) == {customer["id"]: PROCESSED}
    with services.db.sessions() as session:
        row = session.get(Customer, era.CUSTOMER)
        assert (row.entity_type, row.entity_id, row.name) == ("organization", None, "Initrode")


@pytest.mark.parametrize(
    "value, error",
    [
        ("org\x0042", "expected text without NUL characters"),
        ("o" * 501, "expected at most 500 characters, got 501"),
    ],
)
def test_a_metadata_value_in_use_is_checked_like_mirrored_text(services, value, error):
    customer = event("2024-06-20", "customer.updated")
    customer["data"]["object"]["metadata"]["portal_entity_id"] = value
    status, message = deliver(services, customer)[customer["id"]]
    assert status == "failed"
    assert message.startswith(f"PermanentEventError: data.object.metadata.portal_entity_id: {error}")
    # The same text under a key the service does not read is no one's business.
    customer["data"]["object"]["metadata"] = {"portal_entity_id": "org_42", "note": value}
    assert deliver(services, customer) == {customer["id"]: PROCESSED}


def test_a_metadata_value_as_long_as_stripe_allows_is_the_entity_id(services):
    """Stripe allows metadata values of up to 500 characters; the portal's id may use them all."""
    customer = event("2024-06-20", "customer.updated")
    customer["data"]["object"]["metadata"]["portal_entity_id"] = "o" * 500
    assert deliver(services, customer) == {customer["id"]: PROCESSED}
    with services.db.sessions() as session:
        assert session.get(Customer, era.CUSTOMER).entity_id == "o" * 500


# 4. Empty-string ids -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2016-07-06", "2017-08-15", "2018-05-21"])
def test_an_empty_string_id_reads_as_no_id(services, version):
    """Old API versions write `""` for an unset id (`subscription: ""`): the invoice mirrors
    without a subscription, its lines without theirs, nothing fails."""
    paid = event(version, "invoice.paid", subscription="")
    for line in paid["data"]["object"]["lines"]["data"]:
        line.update(subscription="", subscription_item="")
    assert deliver(services, paid) == {paid["id"]: PROCESSED}
    inv = load_invoice(services, era.INVOICE)
    assert (inv.status, inv.subscription_id, inv.customer_id, inv.total) == (
        "paid", None, era.CUSTOMER, era.TOTAL,
    )  # fmt: skip
    assert len({line.id for line in inv.lines}) == 3


def test_an_invoice_with_an_empty_customer_id_mirrors_without_a_customer(services):
    paid = event("2017-08-15", "invoice.paid", customer="")
    assert deliver(services, paid) == {paid["id"]: PROCESSED}
    inv = load_invoice(services, era.INVOICE)
    assert (inv.status, inv.customer_id) == ("paid", None)
    with services.db.sessions() as session:
        assert session.get(Customer, era.CUSTOMER) is None


# What no schema allows still fails at once, naming the field -------------------------------


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"id": ""}, 'data.object.id: expected an id, got ""'),
        ({"status": "bogus"}, "data.object.status: expected one of"),
        ({"status": {"value": "paid"}}, "data.object.status: expected one of"),
        ({"total_taxes": "none"}, 'data.object.total_taxes: expected a list, got "none"'),
        ({"total_taxes": [None]}, "data.object.total_taxes[0]: expected an object, got null"),
        ({"metadata": ["a"]}, "data.object.metadata: expected an object, got a list"),
        ({"attempt_count": 2**31}, "data.object.attempt_count: expected an integer in the signed 32-bit"),
        ({"amount_due": "10000"}, 'data.object.amount_due: expected an integer, got "10000"'),
        ({"customer": {"id": 5}}, "data.object.customer.id: expected an id, got 5"),
    ],
)
def test_what_no_schema_allows_still_fails_permanently(services, changes, error):
    bad = event("2026-10-28.endive", "invoice.paid", **changes)
    status, message = deliver(services, bad)[bad["id"]]
    assert status == "failed"
    assert message.startswith(f"PermanentEventError: {error}"), message


# 5. What every schema requires ---------------------------------------------------------------


REQUIRED = [
    ("credit_note.created", "customer", "an id or an object with an id"),
    ("credit_note.created", "invoice", "an id or an object with an id"),
    ("credit_note.created", "currency", "a three-letter currency code"),
    ("invoice.finalized", "currency", "a three-letter currency code"),
    ("invoice.finalized", "amount_due", "an integer"),
    ("invoice.finalized", "total", "an integer"),
    ("invoice.finalized", "lines", "an object"),
    ("invoice_payment.paid", "currency", "a three-letter currency code"),
    ("invoice_payment.paid", "amount_requested", "an integer"),
]


@pytest.mark.parametrize(
    "version, event_type, field, expected",
    [(v, *case) for v in era.ERAS for case in REQUIRED if case[0] in era.event_types(v)],
)
def test_a_field_every_schema_requires_fails_the_event_when_missing(
    services, version, event_type, field, expected
):
    """Never mirrored as NULL: a credit note without its customer would credit no one, a payment
    without its currency would be an amount of nothing."""
    missing = event(version, event_type)
    del missing["data"]["object"][field]
    status, message = deliver(services, missing)[missing["id"]]
    assert (status, message) == (
        "failed",
        f"PermanentEventError: data.object.{field}: expected {expected}, missing",
    )


def test_a_deleted_draft_as_stripe_answers_it_needs_none_of_them(services):
    """`{id, object, deleted}` has its own reading: the draft is marked deleted, nothing fails."""
    created = event("2024-06-20", "invoice.created")
    stub = event("2024-06-20", "invoice.deleted", event_id="evt_1StubStubStub0000000000")
    stub["data"]["object"] = {"id": created["data"]["object"]["id"], "object": "invoice", "deleted": True}
    assert deliver(services, created, stub) == {created["id"]: PROCESSED, stub["id"]: PROCESSED}


def test_a_logged_deletion_stub_never_wins_a_same_second_tie(services):
    """A repair logs Stripe's `{id, object, deleted}` for a gone draft as an event of its fetch
    second. Webhooks of that second tie with it; the stub says nothing of the draft's values, so
    it must never be mirrored as them, whichever the content order would pick and in any order."""
    import itertools

    import handlers
    from handlers import ordering
    from webhook_service.core.models import Invoice

    base = event("2024-06-20", "invoice.created")
    base["data"].pop("previous_attributes", None)
    invoice_id = base["data"]["object"]["id"]
    stub = {**base, "id": "reconcile_stub_1", "type": "invoice.updated"}
    stub["data"] = {"object": {"id": invoice_id, "object": "invoice", "deleted": True}}
    stub_hash = ordering.content_hash(handlers.read(stub))
    drafts = []
    for n in range(200):  # two drafts whose content sorts below the stub's: it would win on content
        draft = copy.deepcopy(base)
        draft["id"] = f"evt_1StubTie{n:015d}"
        draft["data"]["object"]["metadata"] = {"n": str(n)}
        if ordering.content_hash(handlers.read(draft)) < stub_hash:
            drafts.append(draft)
        if len(drafts) == 2:
            break
    assert len(drafts) == 2
    newest = ordering.newest([handlers.read(d) for d in drafts])["id"]
    for order in itertools.permutations([stub, *drafts]):
        outcomes = deliver(services, *order)
        assert set(outcomes.values()) == {PROCESSED}
        with services.db.sessions() as session:
            invoice = session.get(Invoice, invoice_id)
            assert (invoice.source_event_id, invoice.currency) == (newest, base["data"]["object"]["currency"])
            assert invoice.total == base["data"]["object"]["total"] and invoice.deleted_at is not None
