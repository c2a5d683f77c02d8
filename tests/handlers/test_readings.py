"""The declared readings: what they accept, the errors they give, and that the fast plan walk
agrees with marshmallow's own Schema.load on every fixture and every hostile value."""

import copy
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import handlers
from handlers import readings
from tests.helpers import examples
from webhook_service.core.errors import PermanentEventError

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "fixtures").glob("*/*/*.json"))
EVENTS = [json.loads(p.read_text()) for p in FIXTURES]
HANDLED = [e for e in EVENTS if e["type"] in handlers.EVENT_FAMILIES]


def test_every_fixture_reads_the_same_both_ways():
    assert len(HANDLED) > 200
    for event in HANDLED:
        family = handlers.EVENT_FAMILIES[event["type"]]
        assert readings.read_event(event, family) == readings.read_event_slowly(event, family)


def _error(fn, event, family):
    try:
        fn(event, family)
    except PermanentEventError as exc:
        return str(exc)
    return None


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=examples(300), deadline=None)
@given(index=st.integers(0, len(HANDLED) - 1), choice=st.integers(0, 10**6), junk=JUNK)
def test_fast_and_reference_readings_give_the_same_error(index, choice, junk):
    event = copy.deepcopy(HANDLED[index])
    # Replace one value somewhere in data.object (any depth) with junk.
    spots = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            spots.append((node, key))
            walk(value)

    walk(event["data"]["object"])
    node, key = spots[choice % len(spots)]
    node[key] = junk
    family = handlers.EVENT_FAMILIES[event["type"]]
    assert _error(readings.read_event, event, family) == _error(readings.read_event_slowly, event, family)


@pytest.mark.parametrize(
    "change, error",
    [
        (
            lambda o: o["lines"]["data"][3].update(amount="10000"),
            'data.object.lines.data[3].amount: expected an integer, got "10000"',
        ),
        (
            lambda o: o.update(status=["paid"]),
            "data.object.status: expected one of draft, open, paid, uncollectible, void, deleted, got a list",
        ),
        (
            lambda o: o.update(due_date=9_999_999_999_999),
            "data.object.due_date: expected a Unix timestamp up to year 9999",
        ),
        (
            lambda o: o.update(customer=12345),
            "data.object.customer: expected an id or an object with an id, got 12345",
        ),
        (
            lambda o: o.update(currency=840),
            "data.object.currency: expected a three-letter currency code, got 840",
        ),
        (
            lambda o: o.update(total=2**63),
            "data.object.total: expected an integer of at most 15 digits, got 9223372036854775808",
        ),
        (  # each fits 64 bits, but their sum (the tax) would not: refused before any arithmetic
            lambda o: o.update(total_taxes=[{"amount": 2**62}, {"amount": 2**62}]),
            "data.object.total_taxes[0].amount: expected an integer of at most 15 digits",
        ),
        (
            lambda o: o.update(number="N" * 256),
            "data.object.number: expected at most 255 characters, got 256",
        ),
        (
            lambda o: o.update(hosted_invoice_url="https://x\x00"),
            "data.object.hosted_invoice_url: expected text without NUL",
        ),
        (
            lambda o: o["lines"]["data"][0].update(description="x" * 41 + "\x00"),
            "data.object.lines.data[0].description",
        ),
        (
            lambda o: o["total_taxes"][0].update(amount="800"),
            'data.object.total_taxes[0].amount: expected an integer, got "800"',
        ),
    ],
)
def test_errors_name_the_path_and_what_was_found(change, error):
    event = next(e for e in HANDLED if e["type"] == "invoice.paid" and e["api_version"].endswith("endive"))
    event = copy.deepcopy(event)
    lines = event["data"]["object"]["lines"]["data"]
    while len(lines) < 4:
        lines.append(copy.deepcopy(lines[0]) | {"id": f"il_1Extra{len(lines)}"})
    change(event["data"]["object"])
    with pytest.raises(PermanentEventError) as caught:
        handlers.read(event)
    assert str(caught.value).startswith(error)
    assert "\x00" not in str(caught.value)


def test_envelope_values_are_checked_too():
    event = copy.deepcopy(next(e for e in HANDLED if e["type"] == "customer.updated"))
    event["created"] = "yesterday"
    with pytest.raises(PermanentEventError, match=r'^created: expected a Unix timestamp, got "yesterday"$'):
        handlers.read(event)
    event["created"], event["data"] = 1, ["not", "an", "object"]
    with pytest.raises(PermanentEventError, match=r"^data: expected an object, got a list$"):
        handlers.read(event)


def test_unhandled_types_are_not_read():
    event = {"type": "charge.succeeded", "data": {"object": {"amount": "lots"}}}
    assert handlers.read(event) is event


def _basil(event_type):
    return copy.deepcopy(
        next(e for e in HANDLED if e["type"] == event_type and e["api_version"].endswith("endive"))
    )


@pytest.mark.parametrize(
    "event_type, page",
    [("invoice.paid", "lines"), ("invoice.paid", "payments"), ("credit_note.created", "lines")],
)
def test_every_embedded_list_page_is_read_alike(event_type, page):
    """Invoice lines, invoice payments and credit note lines are one kind of list page: a null item
    or a non-boolean `has_more` fails with its path, a page without `has_more` reads."""
    event = _basil(event_type)
    obj = event["data"]["object"]
    if not obj.get(page):
        obj[page] = {"object": "list", "data": [{"id": "cnli_1Page", "amount": 2000}], "has_more": False}
    assert handlers.read(copy.deepcopy(event))["data"]["object"][page]["data"]
    obj[page]["data"].append(None)
    with pytest.raises(
        PermanentEventError, match=rf"^data\.object\.{page}\.data\[\d+\]: expected an object, got null$"
    ):
        handlers.read(copy.deepcopy(event))
    obj[page]["data"].pop()
    obj[page]["has_more"] = "no"
    with pytest.raises(
        PermanentEventError, match=rf'^data\.object\.{page}\.has_more: expected true or false, got "no"$'
    ):
        handlers.read(copy.deepcopy(event))
    del obj[page]["has_more"]
    assert "has_more" not in handlers.read(event)["data"]["object"][page]


@pytest.mark.parametrize("read", [readings.read_event, readings.read_event_slowly])
def test_empty_ids_and_non_string_metadata_read_as_absent_both_ways(read):
    """`""` where an id may be null is no id; metadata keeps its string values only. The object's
    own id may not be empty, and metadata must still be an object."""
    event = _basil("invoice.paid")
    obj = event["data"]["object"]
    obj.update(customer="", metadata={"a": "x", "b": True, "c": 5, "d": None, "e": {"f": "g"}})
    obj["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"] = ""
    read_obj = read(copy.deepcopy(event), "invoice")["data"]["object"]
    assert read_obj["customer"] is None and read_obj["metadata"] == {"a": "x"}
    assert read_obj["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"] is None
    for change, error in (
        ({"id": ""}, 'data.object.id: expected an id, got ""'),
        ({"metadata": "x"}, 'data.object.metadata: expected an object, got "x"'),
    ):
        with pytest.raises(PermanentEventError, match=f"^{re.escape(error)}$"):
            read(copy.deepcopy(event) | {"data": {"object": obj | change}}, "invoice")


def test_a_quantity_is_a_count_not_an_amount():
    """Metered usage (bytes, tokens) can pass 15 digits: a quantity is never summed or negated."""
    event = copy.deepcopy(next(e for e in HANDLED if e["type"].startswith("invoice.") and
                               e["data"]["object"].get("lines", {}).get("data")))  # fmt: skip
    event["data"]["object"]["lines"]["data"][0]["quantity"] = 2 * 10**15
    assert handlers.read(event)["data"]["object"]["lines"]["data"][0]["quantity"] == 2 * 10**15
    event["data"]["object"]["lines"]["data"][0]["quantity"] = 2**63
    with pytest.raises(PermanentEventError, match=r"quantity: expected an integer in the signed 64-bit"):
        handlers.read(event)
