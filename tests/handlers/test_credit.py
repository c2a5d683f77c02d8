"""handlers/customers.py, credit_notes.py and ledger.py, on each database."""

import pytest
import sqlalchemy as sa
from builder import (
    NEW_API,
    OLD_API,
    Customer,
    CustomerHistory,
    Ids,
    InvoiceLifecycle,
    Line,
    credit_note,
    credit_note_event,
    voided,
)

import handlers
from tests.conftest import load_fixture_events
from tests.handlers.test_invoices import apply, load_invoice
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import CreditLedgerEntry, CreditNote
from webhook_service.core.models import Customer as CustomerRow
from webhook_service.web.app import create_app

T = 1_793_000_000
DAY = 86400
ERIN = Customer("cus_1ErinEnterprises000000000", "Erin Enterprises", "erin@example.com")


def load_customer(services, customer_id):
    with services.db.sessions() as session:
        customer = session.get(CustomerRow, customer_id)
        assert customer is not None
        ledger = sorted((e.kind, e.amount, e.source_type, e.source_id) for e in customer.ledger)
        return customer, ledger


def load_note(services, note_id) -> CreditNote:
    with services.db.sessions() as session:
        return session.get(CreditNote, note_id)


def invoice_for(api, seed, **kwargs):
    ids = Ids(f"credit-{api}-{seed}")
    lines = [Line(ids.make("il"), "Plan", 10000, price_id="price_1P", product_id="prod_1P")]
    return ids, InvoiceLifecycle(ids, ERIN, api, T, lines, number=f"ERIN-{seed}", **kwargs)


def test_fixture_credit_story_ends_with_balances_and_ledgers_that_agree(services):
    apply(services, load_fixture_events())
    acme, acme_ledger = load_customer(services, "cus_1AcmeRobotics000000000")
    assert (acme.balance, acme.credit_balance, acme.entity_type, acme.entity_id) == (
        -1000,
        1000,
        "company",
        "org_acme",
    )
    assert sum(amount for _, amount, _, _ in acme_ledger) == acme.credit_balance
    assert [(k, a) for k, a, _, _ in acme_ledger] == [
        ("applied_to_invoice", -1450), ("credit_note", 500), ("credit_note", 1000), ("credit_note", 1450),
        ("credit_note_voided", -500),
    ]  # fmt: skip
    globex, globex_ledger = load_customer(services, "cus_1GlobexCorporation0000")
    assert globex.credit_balance == 2500 and globex_ledger == [("adjustment", 2500, "customer", globex.id)]
    initech, initech_ledger = load_customer(services, "cus_1Initech00000000000000")
    assert initech.credit_balance == 0 and initech_ledger == [] and initech.entity_type == "company"


def test_old_shape_credit_note_credited_to_balance(services):
    ids, life = invoice_for(OLD_API, "old")
    apply(services, [life.created(T), life.finalized(T + 10), *life.paid(T + 20)])
    obj = credit_note(
        ids, life, T + DAY, amount=3000, credit_type="post_payment", to_balance=3000, number="CN-1"
    )
    assert "refund" in obj and "refunds" not in obj and "post_payment_amount" not in obj
    apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API)])
    note = load_note(services, obj["id"])
    assert (note.type, note.status, note.amount, note.post_payment_amount, note.credited_to_balance) == (
        "post_payment", "issued", 3000, 3000, 3000,
    )  # fmt: skip
    assert note.invoice_id == life.id and note.refunded_amount == 0 and note.pdf.endswith("/pdf")
    customer, ledger = load_customer(services, ERIN.id)
    # No customer snapshot yet: the balance is what the ledger explains.
    assert customer.balance is None and customer.credit_balance == 3000
    assert ledger == [("credit_note", 3000, "credit_note", obj["id"])]


def test_old_shape_refund_only_credit_note_touches_no_balance(services):
    ids, life = invoice_for(OLD_API, "refund")
    obj = credit_note(
        ids, life, T + DAY, amount=2500, credit_type="post_payment", refunded=2500, number="CN-2"
    )
    apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API)])
    note = load_note(services, obj["id"])
    assert (note.refunded_amount, note.credited_to_balance) == (2500, 0) and note.refund_ids.startswith("re_")
    assert load_customer(services, ERIN.id)[1] == []


def test_new_shape_mixed_credit_note_splits_refund_and_balance(services):
    ids, life = invoice_for(NEW_API, "mixed")
    obj = credit_note(
        ids, life, T + DAY, amount=4000, credit_type="post_payment", to_balance=1500, refunded=2000,
        out_of_band=500, reason="order_change", memo="Partial", number="CN-3",
    )  # fmt: skip
    obj["type"] = "mixed"
    obj["pre_payment_amount"], obj["post_payment_amount"] = 0, 4000
    apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, NEW_API)])
    note = load_note(services, obj["id"])
    assert (note.type, note.refunded_amount, note.out_of_band_amount, note.credited_to_balance) == (
        "mixed",
        2000,
        500,
        1500,
    )
    assert (note.reason, note.memo) == ("order_change", "Partial")


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_voided_credit_note_reverses_once_in_any_order(services, order):
    ids, life = invoice_for(NEW_API, f"void-{order}")
    history = CustomerHistory(ids, ERIN, NEW_API)
    obj = credit_note(
        ids, life, T + DAY, amount=700, credit_type="post_payment", to_balance=700, number="CN-4"
    )
    events = [
        history.created(T - DAY),
        credit_note_event(ids, "credit_note.created", T + DAY, obj, NEW_API),
        history.balance_changed(T + DAY, -700),
        credit_note_event(ids, "credit_note.voided", T + 2 * DAY, voided(obj, T + 2 * DAY), NEW_API),
        history.balance_changed(T + 2 * DAY, 0),
    ]
    apply(services, (events if order == "forward" else events[::-1]) * 2)
    customer, ledger = load_customer(services, ERIN.id)
    assert customer.credit_balance == 0 and load_note(services, obj["id"]).status == "void"
    assert [(k, a) for k, a, _, _ in ledger] == [("credit_note", 700), ("credit_note_voided", -700)]


def test_credit_applied_at_finalization_and_returned_when_voided(services):
    ids, life = invoice_for(NEW_API, "applied", starting_balance=-2000, collection_method="send_invoice")
    history = CustomerHistory(ids, ERIN, NEW_API)
    history.balance = -2000
    apply(services, [life.created(T), life.finalized(T + 60), history.balance_changed(T + 60, 0)])
    invoice = load_invoice(services, life.id)
    assert (invoice.credit_applied, invoice.amount_due, invoice.amount_remaining) == (2000, 8000, 8000)
    customer, ledger = load_customer(services, ERIN.id)
    assert customer.credit_balance == 0
    assert ledger == [
        ("adjustment", 2000, "customer", ERIN.id),
        ("applied_to_invoice", -2000, "invoice", life.id),
    ]
    apply(services, [life.voided(T + DAY), history.balance_changed(T + DAY, -2000)])
    customer, ledger = load_customer(services, ERIN.id)
    assert customer.credit_balance == 2000 and ("unapplied_from_invoice", 2000, "invoice", life.id) in ledger
    assert sum(amount for _, amount, _, _ in ledger) == 2000


def test_overpayment_is_credited(services):
    ids, life = invoice_for(NEW_API, "overpaid")
    history = CustomerHistory(ids, ERIN, NEW_API)
    events = [history.created(T - DAY), life.created(T), life.finalized(T + 60), *life.paid(T + 120)]
    events += [life.overpaid(T + 121, 350), history.balance_changed(T + 121, -350)]
    apply(services, events[::-1])
    customer, ledger = load_customer(services, ERIN.id)
    assert load_invoice(services, life.id).amount_overpaid == 350
    assert customer.credit_balance == 350 and ledger == [("overpayment", 350, "invoice", life.id)]


def test_deleted_customer_is_never_resurrected(services):
    ids = Ids("deleted")
    history = CustomerHistory(ids, ERIN, NEW_API, {"entity_type": "company"})
    created, deleted = history.created(T), history.deleted(T + DAY)
    late_update = history.metadata_changed(
        T + 2 * DAY, portal_entity_id="org_late"
    )  # delivered after deletion
    apply(services, [created, deleted, late_update])
    customer, _ = load_customer(services, ERIN.id)
    assert customer.deleted_at is not None and int(customer.deleted_at.timestamp()) == T + DAY
    apply(services, [created])  # replays change nothing either
    assert load_customer(services, ERIN.id)[0].deleted_at == customer.deleted_at


def test_customer_events_outrank_invoice_hints_in_any_order(services):
    ids, life = invoice_for(NEW_API, "hints")
    history = CustomerHistory(ids, ERIN, NEW_API, {"entity_type": "Company", "portal_entity_id": "org_erin"})
    renamed = Customer(ERIN.id, "Erin Enterprises GmbH", "billing@erin.example")
    history.customer = renamed
    events = [history.created(T - DAY), life.created(T + DAY)]  # the invoice still carries the old name
    apply(services, events[::-1])
    customer, _ = load_customer(services, ERIN.id)
    assert (customer.name, customer.email, customer.entity_type, customer.entity_id) == (
        "Erin Enterprises GmbH", "billing@erin.example", "company", "org_erin",
    )  # fmt: skip


def test_entity_metadata_keys_are_configurable(database_url, redis_url):
    from tests.conftest import clean_tables, make_config
    from webhook_service.web.services import get_services

    app = create_app(make_config(database_url, redis_url, entity_type_metadata_key="kind",
                                 entity_id_metadata_key="crm_id"))  # fmt: skip
    services = get_services(app)
    clean_tables(services.db.engine)
    history = CustomerHistory(
        Ids("keys"), ERIN, NEW_API, {"kind": "company", "crm_id": "crm-42", "entity_type": "x"}
    )
    apply(services, [history.created(T)])
    customer, _ = load_customer(services, ERIN.id)
    assert (customer.entity_type, customer.entity_id) == ("company", "crm-42")
    services.db.engine.dispose()


def test_unknown_entity_type_falls_back_to_organization(services):
    history = CustomerHistory(Ids("fallback"), ERIN, NEW_API, {"entity_type": "household"})
    apply(services, [history.created(T)])
    assert load_customer(services, ERIN.id)[0].entity_type == "organization"


def test_ledger_rows_are_unique_per_reason_and_object(services):
    ids, life = invoice_for(NEW_API, "unique")
    obj = credit_note(
        ids, life, T + DAY, amount=900, credit_type="post_payment", to_balance=900, number="CN-9"
    )
    twin_events = [credit_note_event(ids, "credit_note.created", T + DAY, obj, NEW_API) for _ in range(2)]
    assert twin_events[0]["id"] != twin_events[1]["id"]  # two Event objects for one change
    apply(services, twin_events + twin_events)
    with services.db.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(CreditLedgerEntry)) == 1
    with pytest.raises(sa.exc.IntegrityError), services.db.sessions() as session, session.begin():
        # The key is (customer, kind, object, currency): one row per reason, object and currency.
        duplicate = {
            "kind": "credit_note",
            "source_type": "credit_note",
            "source_id": obj["id"],
            "currency": "usd",
        }
        session.add(CreditLedgerEntry(customer_id=ERIN.id, amount=1, **duplicate))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": None}, r"^data\.object\.id: expected an id, got null$"),
        ({"status": "pending"}, r'^data\.object\.status: expected one of issued, void, got "pending"$'),
        ({"amount": "9.00"}, r'^data\.object\.amount: expected an integer, got "9\.00"$'),
        ({"amount": None}, r"^data\.object\.amount: expected an integer, got null$"),
    ],
)
def test_malformed_credit_notes_are_permanent_errors(services, change, message):
    ids, life = invoice_for(NEW_API, "bad")
    obj = dict(credit_note(ids, life, T, amount=100, credit_type="pre_payment", number="CN-X"), **change)
    with pytest.raises(PermanentEventError, match=message):
        apply(services, [credit_note_event(ids, "credit_note.created", T, obj, NEW_API)])


def test_full_and_partial_credit_is_visible_on_the_invoice(services):
    _, partial = invoice_for(NEW_API, "partial", collection_method="send_invoice")
    _, full = invoice_for(NEW_API, "full", collection_method="send_invoice")
    apply(services, [partial.created(T), partial.finalized(T + 60), partial.credit_noted(T + 70, pre=4000)])
    apply(services, [full.created(T), full.finalized(T + 60), full.credit_noted(T + 70, pre=10000)])
    partial_row, full_row = load_invoice(services, partial.id), load_invoice(services, full.id)
    assert (partial_row.pre_payment_credit_notes_amount, partial_row.credited_in_full) == (4000, False)
    assert partial_row.amount_remaining == 6000  # Stripe's number, as it sent it
    assert (full_row.pre_payment_credit_notes_amount, full_row.credited_in_full) == (10000, True)
    assert full_row.amount_remaining == 0


def _split_note(ids, life):
    """A pre-basil note of 50.00: 30.00 refunded, 20.00 credited; the object names both, sizes neither."""
    obj = credit_note(
        ids, life, T + DAY, amount=5000, credit_type="post_payment", to_balance=2000, refunded=3000,
        number="CN-SPLIT",
    )  # fmt: skip
    assert obj["refund"] and obj["customer_balance_transaction"] and "post_payment_amount" not in obj
    return obj


@pytest.mark.parametrize("order", ["note_first", "balance_first"])
def test_old_shape_note_that_refunds_and_credits_takes_its_credit_from_the_balance(services, order):
    ids, life = invoice_for(OLD_API, f"split-{order}")
    obj = _split_note(ids, life)
    erin = CustomerHistory(ids, ERIN, OLD_API)
    events = [
        credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API),
        erin.created(T),
        erin.balance_changed(T + DAY, -2000),
    ]
    apply(services, events if order == "note_first" else events[::-1])
    customer, ledger = load_customer(services, ERIN.id)
    assert customer.credit_balance == 2000
    assert ledger == [("credit_note", 2000, "credit_note", obj["id"])]
    note = load_note(services, obj["id"])
    assert (note.credited_to_balance, note.refunded_amount) == (2000, 3000)


def test_old_shape_split_estimate_never_hides_a_real_debit_beyond_the_note(services):
    """The estimate only shrinks the note's own credit: a shortfall beyond it stays an adjustment."""
    ids, life = invoice_for(OLD_API, "split-debit")
    obj = _split_note(ids, life)
    erin = CustomerHistory(ids, ERIN, OLD_API)
    erin.balance = -2000
    apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API)])
    apply(services, [erin.balance_changed(T + DAY, 700)])  # the customer owes 7.00
    customer, ledger = load_customer(services, ERIN.id)
    assert customer.credit_balance == -700
    assert ledger == [("adjustment", -700, "customer", ERIN.id), ("credit_note", 0, "credit_note", obj["id"])]
    assert sum(amount for _, amount, _, _ in ledger) == customer.credit_balance


@pytest.mark.parametrize("expanded", ["customer_balance_transaction", "refund"])
def test_old_shape_note_with_an_expanded_side_is_split_exactly(services, expanded):
    ids, life = invoice_for(OLD_API, f"split-{expanded}")
    obj = _split_note(ids, life)
    amount = -2000 if expanded == "customer_balance_transaction" else 3000
    obj[expanded] = {"id": obj[expanded], "object": expanded, "amount": amount, "currency": "usd"}
    apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API)])
    note = load_note(services, obj["id"])
    assert (note.credited_to_balance, note.refunded_amount) == (2000, 3000)
    assert note.customer_balance_transaction and note.refund_ids and "{" not in note.refund_ids
    customer, ledger = load_customer(services, ERIN.id)
    assert ledger == [("credit_note", 2000, "credit_note", obj["id"])] and customer.credit_balance == 2000


def test_an_expanded_balance_transaction_with_a_bad_amount_names_the_field(services):
    ids, life = invoice_for(OLD_API, "split-bad")
    obj = _split_note(ids, life)
    obj["customer_balance_transaction"] = {"id": obj["customer_balance_transaction"], "amount": "2000"}
    message = r"customer_balance_transaction\.amount: expected an integer"
    with pytest.raises(PermanentEventError, match=message):
        apply(services, [credit_note_event(ids, "credit_note.created", T + DAY, obj, OLD_API)])


def test_a_fetched_deleted_customer_stub_marks_it_deleted_and_keeps_the_rest(services):
    """What a retrieve of a deleted customer answers (`{id, object, deleted}`, fetched in memory or
    logged by a repair) says it is gone, nothing else: profile, entity and credit stay."""
    ids = Ids("stub")
    history = CustomerHistory(ids, ERIN, NEW_API, {"entity_type": "company", "portal_entity_id": "org_erin"})
    history.balance = -2000
    created = history.created(T)
    stub = {**history.balance_changed(T + DAY, -2000), "_fetched_at": T + 2 * DAY}
    stub["data"] = {"object": {"id": ERIN.id, "object": "customer", "deleted": True}}
    logged_stub = {**stub, "id": ids.make("evt"), "created": T + 3 * DAY, "_fetched_at": T + 3 * DAY}
    for order in ([created, stub, logged_stub], [stub, logged_stub, created]):
        apply(services, order)
        customer, _ = load_customer(services, ERIN.id)
        assert (customer.name, customer.entity_type, customer.entity_id, customer.credit_balance) == (
            ERIN.name, "company", "org_erin", 2000,
        )  # fmt: skip
        assert int(customer.deleted_at.timestamp()) == T + 2 * DAY


def test_a_description_standing_for_the_name_is_cut_to_the_column(services):
    """Before 2019 the `description` named the customer; Stripe allows 5,000 characters of it."""
    event = CustomerHistory(Ids("long"), ERIN, OLD_API).created(T)
    obj = event["data"]["object"]
    obj.pop("name", None)
    obj["description"] = "Erin " * 200
    apply(services, [handlers.read(event)])
    name = load_customer(services, ERIN.id)[0].name
    assert name == ("Erin " * 200)[:512]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"balance": -(2**63)}, "data.object.balance: expected an integer of at most 15 digits"),
        (
            {"invoice_credit_balance": {"eur": 2**62}},
            "data.object.invoice_credit_balance.eur: expected an integer of at most 15 digits",
        ),
    ],
)
def test_a_balance_no_column_could_negate_fails_at_once_naming_it(change, error):
    event = CustomerHistory(Ids("huge"), ERIN, NEW_API).created(T)
    event["data"]["object"].update(change)
    with pytest.raises(PermanentEventError, match=error.replace("[", r"\[")):
        handlers.read(event)
