"""The declared readings are as lenient as Stripe's published schemas of every API version.

Sources (tests/spec/schemas.py): Stripe's OpenAPI spec of 2017-08-15 to 2020-08-27, and the
generated classes of one stripe-python release per later era (2023-10-16 to the newest), read
from wheels that fetch_stripe_wheels.py downloads. A missing wheel is fetched, and when it cannot
be, the run fails: like PostgreSQL and Redis (tests/conftest.py), never a skip.

Two checks: field by field, no reading refuses a null, a type or an enum value some version's
schema allows, nor requires what one may leave out; and payloads drawn from each version's
schema (tests/spec/payloads.py), delivered through the event log and a real drain on
PostgreSQL, are all processed, none failed.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handlers
from handlers import credit_notes, customers, invoice_payments, invoices
from handlers.readings import OBJECT_READINGS, fields
from tests.conftest import clean_tables
from tests.helpers import examples
from tests.spec import conformance, fetch_stripe_wheels, payloads, schemas
from webhook_service.core.models import StripeEvent
from webhook_service.processing import drain, eventlog
from webhook_service.processing.envelope import parse_envelope


def _versions() -> list[schemas.Version]:
    missing = fetch_stripe_wheels.fetch_missing()
    if missing:
        raise RuntimeError(
            f"stripe=={', '.join(missing)} could not be downloaded into {fetch_stripe_wheels.CACHE}: "
            "run `make stripe-wheels` (python tests/spec/fetch_stripe_wheels.py) with PyPI reachable"
        )
    return schemas.all_versions()


VERSIONS = _versions()
CASES = [(version, family) for version in VERSIONS for family in version.roots]
TIMES = conformance.time_paths(VERSIONS)

#: Where a reading is stricter than a schema on purpose, and why.
ACCEPTED = {
    # Only a preview (the upcoming invoice) has no id, and `invoice.upcoming` is not a handled
    # type (SPEC.md: ignored cleanly); every handled invoice event names a real invoice.
    "invoice.id: required by the reading, optional in the schema",
    "invoice.id: the schema allows null, the reading refuses it",
}


def _case_id(case) -> str:
    version, family = case
    return f"{version.name}-{family}"


def test_every_era_has_a_source():
    """One schema per era: the OpenAPI ones, then each SDK release names the version it pins."""
    names = [version.name for version in VERSIONS]
    assert names[:8] == ["2017-08-15", "2018-02-28", "2018-05-21", "2018-11-08",
                         "2019-03-14", "2019-12-03", "2020-03-02", "2020-08-27"]  # fmt: skip
    assert names[8:] == list(fetch_stripe_wheels.RELEASES.values())
    assert {family for version in VERSIONS for family in version.roots} == set(OBJECT_READINGS)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_no_reading_refuses_what_a_schema_allows(case):
    version, family = case
    found = [p for p in conformance.problems(version, family) if p not in ACCEPTED]
    assert not found, f"{version.source} {version.name}:\n" + "\n".join(found)


def _declared(schema, path):
    for name, field in schema.fields.items():
        yield f"{path}.{name}", field
        if isinstance(field, fields.Obj):
            yield from _declared(field.schema, f"{path}.{name}")
        elif isinstance(field, fields.ListOf) and isinstance(field.item, fields.Obj):
            yield from _declared(field.item.schema, f"{path}.{name}[]")


def test_timestamps_are_the_integers_stripe_documents_as_times():
    """A Timestamp refuses negative and past-9999 values, an Int accepts them: each field's kind
    is what some version's schema says it is (and what the payload strategy draws)."""
    wrong = []
    for family, reading in OBJECT_READINGS.items():
        for path, field in _declared(reading(), family):
            if isinstance(field, fields.Timestamp) != (path in TIMES) and isinstance(
                field, fields.Int | fields.Timestamp
            ):
                wrong.append(path)
    assert not wrong


def test_the_check_finds_a_stricter_reading():
    """The walk is not vacuous: a reading that refused null totals or `deleted` would be caught."""
    version = next(v for v in VERSIONS if v.name == "2019-12-03")
    reading = OBJECT_READINGS["invoice"]
    status, totals = reading._declared_fields["status"], reading._declared_fields["total_tax_amounts"]
    try:
        reading._declared_fields["status"] = fields.Choice(("draft", "open", "paid", "uncollectible", "void"))
        reading._declared_fields["total_tax_amounts"] = fields.items(type(totals.item.schema))
        found = conformance.problems(version, "invoice")
    finally:
        reading._declared_fields["status"], reading._declared_fields["total_tax_amounts"] = status, totals
    assert "invoice.status: the schema lists deleted, the reading refuses" in found
    assert "invoice.total_tax_amounts: the schema allows null, the reading refuses it" in found


EVENT_TYPES = {
    "invoice": sorted(invoices.EVENT_TYPES),
    "customer": sorted(customers.EVENT_TYPES),
    "credit_note": sorted(credit_notes.EVENT_TYPES),
    "invoice_payment": sorted(invoice_payments.EVENT_TYPES),
}


@st.composite
def events(draw, version: schemas.Version, family: str):
    obj = draw(payloads.objects(version, family, TIMES))
    return {
        "id": "evt_1SpecConformance000000",
        "object": "event",
        "type": draw(st.sampled_from(EVENT_TYPES[family])),
        "api_version": version.name,
        "created": draw(st.integers(1_500_000_000, 1_900_000_000)),
        "livemode": draw(st.booleans()),
        "data": {"object": obj},
    }


@pytest.mark.postgresql_only
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_a_payload_any_schema_allows_is_processed(services, case):
    version, family = case

    @settings(
        max_examples=examples(25),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(event=events(version, family))
    def run(event):
        clean_tables(services.db.engine)
        body = json.dumps(event).encode()
        eventlog.record_event(services.db.engine, parse_envelope(body), body)
        drain.drain(services.db, services.queue, 50)
        with services.db.sessions() as session:
            row = session.get(StripeEvent, event["id"])
            assert row is not None
            outcome = (row.status, row.last_error)
        assert outcome == ("processed", None), outcome
        assert handlers.read(event)["data"]["object"]["id"]

    run()
