"""Tables of the portal database. They change only through migrations (see docs/schema.md)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way in and out, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the database stores UTC only")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC text so it sorts and compares correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


#: Indexes on expressions that migrations create on PostgreSQL only (SQLite cannot reflect them, so
#: they are not declared here): the customer list's case-insensitive name and email prefix search.
EXPRESSION_INDEXES = frozenset({"ix_customers_name_prefix", "ix_customers_email_prefix"})


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class EventStatus(enum.StrEnum):
    """Where an accepted event stands. `retrying` means failed with a retry scheduled."""

    QUEUED = "queued"
    PROCESSED = "processed"
    IGNORED = "ignored"
    RETRYING = "retrying"
    FAILED = "failed"


class InvoiceStatus(enum.StrEnum):
    """Portal status of an invoice; ranks order them so status never moves backwards."""

    DRAFT = "draft"
    OPEN = "open"
    PAST_DUE = "past_due"
    UNCOLLECTIBLE = "uncollectible"
    PAID = "paid"
    VOID = "void"


class StripeEvent(Base):
    """The event log: every accepted delivery's event, once, with its raw payload (the durable copy)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(100))
    api_version: Mapped[str | None] = mapped_column(sa.String(64))
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))
    object_id: Mapped[str | None] = mapped_column(sa.String(255))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    ignored_reason: Mapped[str | None] = mapped_column(sa.Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Retries left after the attempt that is due (core/retry.py); NULL: a fresh episode, the whole
    #: schedule (never failed, processed since, or replayed).
    retries_left: Mapped[int | None] = mapped_column(sa.SmallInteger)
    payload: Mapped[str] = mapped_column(sa.Text)
    #: Which share of the backlog a drain takes this event with (eventlog.lock_partition_of).
    lock_partition: Mapped[int | None] = mapped_column(sa.SmallInteger)
    #: Where the last failure happened: frames and exception types only (no values, locals or SQL).
    last_traceback: Mapped[str | None] = mapped_column(sa.Text)
    #: Set when retention dropped the payload of an event a mirrored row names (its id stays).
    payload_pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_stripe_events_status_received", "status", "received_at"),
        sa.Index("ix_stripe_events_status_partition_received", "status", "lock_partition", "received_at"),
        sa.Index("ix_stripe_events_type_created", "type", "created"),
        sa.Index("ix_stripe_events_object_id", "object_id"),
        # The read API lists the log newest first, optionally by type.
        sa.Index("ix_stripe_events_received", "received_at"),
        sa.Index("ix_stripe_events_type_received", "type", "received_at"),
        # Retries by due time, for /metrics and recovery; partial, so only events awaiting a retry
        # are in it (the predicate has no parameter, so generic plans use it too).
        sa.Index(
            "ix_stripe_events_retry_due",
            "next_attempt_at",
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        ),
    )


class Customer(Base):
    """A Stripe customer and the portal billable entity it maps to.

    Created from an invoice's hints when an invoice arrives first; customer events outrank hints.
    """

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(sa.String(512))
    email: Mapped[str | None] = mapped_column(sa.String(512))
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The Connect account the object belongs to (`event.account`); null for the platform's own.
    account: Mapped[str | None] = mapped_column(sa.String(255))
    #: Stripe's `balance` (negative = credit), from its newest observation: a customer snapshot, or an
    #: invoice that applied credit at finalization (`ending_balance`); null before either arrives.
    balance: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: When `balance` was observed: `<unix second>.<1 customer snapshot | 0 invoice>`; newest wins.
    balance_observed_key: Mapped[str | None] = mapped_column(sa.String(40))
    #: Credit available to the customer, positive (Stripe's balance negated); agrees with the ledger.
    credit_balance: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The newest customer snapshot carried Stripe's `invoice_credit_balance` (only an expanded
    #: fetch does), which lists every currency with a balance: other currencies hold none.
    credit_map_complete: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false(), nullable=False
    )
    entity_type: Mapped[str] = mapped_column(sa.String(32), default="organization")
    #: The portal's id from the customer's metadata: as wide as a Stripe metadata value (500).
    entity_id: Mapped[str | None] = mapped_column(sa.String(500))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Sortable key of the data the row holds: customer events ("1…") outrank invoice hints ("0…").
    version_key: Mapped[str] = mapped_column(sa.String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    ledger: Mapped[list[CreditLedgerEntry]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CreditLedgerEntry.effective_at"
    )
    balances: Mapped[list[CustomerBalance]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerBalance.currency"
    )

    __table_args__ = (
        sa.Index("ix_customers_entity_id", "entity_id"),
        # The customer list: newest first, overall and per account. (Its name and email prefix
        # search uses lower() expression indexes that migration 0012 creates on PostgreSQL only.)
        sa.Index("ix_customers_created", "created_at", "id"),
        sa.Index("ix_customers_account_created", "account", "livemode", "created_at"),
    )

    @property
    def credit_balances(self) -> dict[str, int]:
        """Credit available in every currency the customer has one in (never summed across them)."""
        return {balance.currency: balance.credit_balance for balance in self.balances}


class Invoice(Base):
    """The mirrored invoice, from the newest snapshot seen (see docs/design.md for "newest")."""

    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    number: Mapped[str | None] = mapped_column(sa.String(255))
    customer_id: Mapped[str | None] = mapped_column(sa.ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default=InvoiceStatus.DRAFT.value)
    stripe_status: Mapped[str | None] = mapped_column(sa.String(32))
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    subtotal: Mapped[int | None] = mapped_column(sa.BigInteger)
    tax: Mapped[int | None] = mapped_column(sa.BigInteger)
    total: Mapped[int | None] = mapped_column(sa.BigInteger)
    amount_due: Mapped[int | None] = mapped_column(sa.BigInteger)
    amount_paid: Mapped[int | None] = mapped_column(sa.BigInteger)
    amount_remaining: Mapped[int | None] = mapped_column(sa.BigInteger)
    credit_applied: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    starting_balance: Mapped[int | None] = mapped_column(sa.BigInteger)
    ending_balance: Mapped[int | None] = mapped_column(sa.BigInteger)
    collection_method: Mapped[str | None] = mapped_column(sa.String(32))
    billing_reason: Mapped[str | None] = mapped_column(sa.String(64))
    subscription_id: Mapped[str | None] = mapped_column(sa.String(255))
    attempt_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    marked_uncollectible_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hosted_invoice_url: Mapped[str | None] = mapped_column(sa.Text)
    invoice_pdf: Mapped[str | None] = mapped_column(sa.Text)
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The Connect account the object belongs to (`event.account`); null for the platform's own.
    account: Mapped[str | None] = mapped_column(sa.String(255))
    #: Credit notes issued against the invoice, before and after payment (Stripe's own sums).
    pre_payment_credit_notes_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    post_payment_credit_notes_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Credit notes cover the whole total (full credit); false for partial or none.
    credited_in_full: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: Paid beyond the amount due, credited to the customer balance (2025-03-31.basil and later).
    amount_overpaid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: What the invoice's paid InvoicePayments add up to (partial payments, 2025-05-28.basil and
    #: later); `amount_paid` is never less than this.
    payments_amount_paid: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default=sa.text("0"))
    #: False when the mirrored lines are only the first page of the invoice's list: the payload said
    #: `lines.has_more` and no API key was configured to fetch the rest (or Stripe no longer has it).
    lines_complete: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Sortable key of the snapshot the row holds; "" for a row being created.
    version_key: Mapped[str] = mapped_column(sa.String(300), default="")
    source_event_id: Mapped[str | None] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan", order_by="InvoiceLine.position"
    )
    status_history: Mapped[list[InvoiceStatusChange]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan", order_by="InvoiceStatusChange.rank"
    )

    @hybrid_property
    def described(self) -> bool:
        """Whether an invoice snapshot has described the row: a payment that came before its
        invoice leaves a placeholder (no version yet), which the API and console do not show."""
        return self.version_key != ""

    __table_args__ = (
        sa.Index("ix_invoices_customer_issued", "customer_id", "issued_at"),
        sa.Index("ix_invoices_status_due", "status", "due_date"),
        sa.Index("ix_invoices_issued_at", "issued_at"),
        sa.Index("ix_invoices_number", "number"),
        # The read API: newest first overall and per customer; number prefix search (LIKE 'x%').
        sa.Index("ix_invoices_created", "created_at", "id"),
        sa.Index("ix_invoices_customer_created", "customer_id", "created_at"),
        sa.Index("ix_invoices_number_prefix", "number", postgresql_ops={"number": "varchar_pattern_ops"}),
        sa.Index("ix_invoices_account_created", "account", "livemode", "created_at"),
        # The incomplete-lines gauge counts these few rows at every scrape.
        sa.Index(
            "ix_invoices_lines_incomplete",
            "id",
            postgresql_where=sa.text("NOT lines_complete"),
            sqlite_where=sa.text("NOT lines_complete"),
        ),
    )


class InvoiceLine(Base):
    """One line of the invoice's newest snapshot, with its portal category."""

    __tablename__ = "invoice_lines"

    invoice_id: Mapped[str] = mapped_column(
        sa.ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer)
    description: Mapped[str | None] = mapped_column(sa.Text)
    category: Mapped[str] = mapped_column(sa.String(16))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    quantity: Mapped[int | None] = mapped_column(sa.BigInteger)
    price_id: Mapped[str | None] = mapped_column(sa.String(255))
    proration: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The invoice's mode and account.
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class InvoiceStatusChange(Base):
    """Audit trail: one row per status an invoice entered, with the event that showed it first."""

    __tablename__ = "invoice_status_history"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    #: Position of `to_status` in the status order; the trail reads in this order (times can tie).
    rank: Mapped[int] = mapped_column(sa.SmallInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Null when the daily sweep, not an event, found the change (a due date passing).
    event_id: Mapped[str | None] = mapped_column(sa.String(255))
    #: Which observation of this status wins (causing event type first, then earliest); internal.
    observation_key: Mapped[str] = mapped_column(sa.String(300))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="status_history")

    __table_args__ = (
        sa.UniqueConstraint("invoice_id", "to_status"),
        # Retention keeps the events the trail names; this finds them (docs/operations.md).
        sa.Index("ix_invoice_status_history_event_id", "event_id"),
    )


class NotificationKind(enum.StrEnum):
    INVOICE_PAST_DUE = "invoice_past_due"


class Audience(enum.StrEnum):
    ADMINS = "admins"
    CUSTOMER = "customer"


class NotificationPreference(Base):
    """A customer's notification choices, set by the portal; no row means the defaults (on, email)."""

    __tablename__ = "notification_preferences"

    #: Stripe customer id; no foreign key, so the portal may set it before the customer is mirrored.
    customer_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    past_due: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    #: Comma-separated channels the portal sends on, e.g. "email" or "email,in_app".
    channels: Mapped[str] = mapped_column(sa.String(255), default="email")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Notification(Base):
    """A notification for the portal to show and send; one per audience per past-due episode."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    audience: Mapped[str] = mapped_column(sa.String(16))
    invoice_id: Mapped[str] = mapped_column(sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    customer_id: Mapped[str | None] = mapped_column(sa.String(255))
    amount_remaining: Mapped[int | None] = mapped_column(sa.BigInteger)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Whole days between the due date and entering past due (0 when it entered before the due date).
    days_past_due: Mapped[int | None] = mapped_column(sa.Integer)
    channels: Mapped[str] = mapped_column(sa.String(255), default="email")
    #: When the invoice entered past due (the episode's start), not when the row was written.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Set by the portal.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The invoice's mode and account.
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))

    __table_args__ = (
        sa.UniqueConstraint("invoice_id", "kind", "audience"),
        sa.Index("ix_notifications_customer_created", "customer_id", "created_at"),
        sa.Index("ix_notifications_audience_created", "audience", "created_at"),
        sa.Index("ix_notifications_created", "created_at"),
        sa.Index("ix_notifications_account_created", "account", "livemode", "created_at"),
    )


class InvoicePayment(Base):
    """A payment toward an invoice (Stripe's InvoicePayment): an invoice may be paid in parts."""

    __tablename__ = "invoice_payments"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    #: No foreign key, like credit notes: the payment may be seen before its invoice.
    invoice_id: Mapped[str | None] = mapped_column(sa.String(255))
    #: open, paid or canceled.
    status: Mapped[str | None] = mapped_column(sa.String(16))
    amount_paid: Mapped[int | None] = mapped_column(sa.BigInteger)
    amount_requested: Mapped[int | None] = mapped_column(sa.BigInteger)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The event's mode and account (handlers/scopes.py), as on every mirrored row.
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))
    version_key: Mapped[str] = mapped_column(sa.String(300), default="")
    source_event_id: Mapped[str | None] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (sa.Index("ix_invoice_payments_invoice_id", "invoice_id"),)


class CreditNote(Base):
    """A mirrored credit note, from its newest snapshot."""

    __tablename__ = "credit_notes"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    #: No foreign key: a credit note may arrive before its invoice, and must not invent one.
    invoice_id: Mapped[str | None] = mapped_column(sa.String(255))
    customer_id: Mapped[str | None] = mapped_column(sa.ForeignKey("customers.id"))
    number: Mapped[str | None] = mapped_column(sa.String(255))
    #: pre_payment, post_payment or mixed.
    type: Mapped[str | None] = mapped_column(sa.String(16))
    #: issued or void.
    status: Mapped[str | None] = mapped_column(sa.String(16))
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    subtotal: Mapped[int | None] = mapped_column(sa.BigInteger)
    total: Mapped[int | None] = mapped_column(sa.BigInteger)
    pre_payment_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    post_payment_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    out_of_band_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    refunded_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Refund ids, comma-separated (`refunds[]`, or the single `refund` before basil).
    refund_ids: Mapped[str | None] = mapped_column(sa.Text)
    credited_to_balance: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    customer_balance_transaction: Mapped[str | None] = mapped_column(sa.String(255))
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    memo: Mapped[str | None] = mapped_column(sa.Text)
    pdf: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The Connect account the object belongs to (`event.account`); null for the platform's own.
    account: Mapped[str | None] = mapped_column(sa.String(255))
    version_key: Mapped[str] = mapped_column(sa.String(300), default="")
    source_event_id: Mapped[str | None] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.Index("ix_credit_notes_invoice_id", "invoice_id"),
        sa.Index("ix_credit_notes_customer_created", "customer_id", "created_at"),
    )


class LedgerKind(enum.StrEnum):
    """Why a customer's credit balance changed (amounts in portal sign: + adds credit)."""

    CREDIT_NOTE = "credit_note"
    CREDIT_NOTE_VOIDED = "credit_note_voided"
    APPLIED_TO_INVOICE = "applied_to_invoice"
    UNAPPLIED_FROM_INVOICE = "unapplied_from_invoice"
    OVERPAYMENT = "overpayment"
    ADJUSTMENT = "adjustment"


class CreditLedgerEntry(Base):
    """One reason a credit balance changed, with the Stripe object behind it; one row per (reason, object)."""

    __tablename__ = "credit_ledger"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(32))
    #: Minor units, portal sign: positive adds credit, negative uses it.
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    #: credit_note, invoice or customer (the object whose state implies this row).
    source_type: Mapped[str] = mapped_column(sa.String(16))
    source_id: Mapped[str] = mapped_column(sa.String(255))
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the payload does not give the amount, only a bound (a pre-basil credit note that both
    #: refunds and credits the balance, read without an API key): the amount is at most this, and
    #: handlers/ledger.py takes from it what the customer's reported balance leaves no room for.
    at_most: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: The customer's mode and account.
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="ledger")

    #: One row per reason, object and currency (the adjustment row exists once per currency).
    __table_args__ = (
        sa.UniqueConstraint(
            "customer_id",
            "kind",
            "source_type",
            "source_id",
            "currency",
            name="uq_credit_ledger_source_currency",
        ),
    )


class CustomerBalance(Base):
    """A customer's credit in one currency; Stripe keeps one balance per currency, and so do we."""

    __tablename__ = "customer_balances"

    customer_id: Mapped[str] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    #: Credit available, positive; equals the sum of the customer's ledger rows in this currency.
    credit_balance: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Stripe's figure from the newest customer snapshot (portal sign); null when no snapshot gave
    #: one for this currency, and the balance is then the sum of the explained ledger rows.
    reported: Mapped[int | None] = mapped_column(sa.BigInteger)
    livemode: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    account: Mapped[str | None] = mapped_column(sa.String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="balances")


class OperatorAction(Base):
    """The audit trail of operator actions: who did what, when, with which parameters and outcome."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: `cli:<OS user>`, `--actor`'s value, `console:<operator key name>` or `scheduler`.
    actor: Mapped[str] = mapped_column(sa.String(255))
    #: replay, resync, pause, resume, prune, or a console action.
    action: Mapped[str] = mapped_column(sa.String(64))
    parameters: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    result: Mapped[dict | None] = mapped_column(sa.JSON)

    __table_args__ = (
        sa.Index("ix_operator_actions_at", "at"),
        sa.Index("ix_operator_actions_action_at", "action", "at"),
    )


class ServiceFlag(Base):
    """A switch operators set for the whole deployment; a row means on (e.g. `processing_paused`)."""

    __tablename__ = "service_flags"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    set_by: Mapped[str] = mapped_column(sa.String(255))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(sa.Text)


class MetricCounter(Base):
    """Counters that only go up (processing/counters.py), moved in the transaction of the work they count.

    A counter is several rows (`shard`), so concurrent writers rarely wait for one row lock;
    readers sum them. The table's size depends on names and labels, never on the number of events.
    """

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    shard: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class RejectionMinute(Base):
    """Rejected deliveries per minute and reason, for the last hour (what /readyz reports on)."""

    __tablename__ = "delivery_rejections"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    reason: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer, default=0)


class ProcessHeartbeat(Base):
    """When each web, worker and scheduler process was last alive (processing/heartbeats.py).

    Keyed by process and role: `serve` is all three in one process.
    """

    __tablename__ = "process_heartbeats"

    process: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BackfillCursor(Base):
    """Where `webhook-service backfill` stands in one Stripe list (processing/backfill.py).

    One row per list (`invoices`, `credit_notes`, `customers`), account and mode, so a killed backfill
    resumes after the last object it recorded instead of listing years of history again.
    """

    __tablename__ = "backfill_cursors"

    #: The list endpoint's name, e.g. `invoices`.
    resource: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    #: The Connect account backfilled (`""` for the platform's own objects).
    account: Mapped[str] = mapped_column(sa.String(255), primary_key=True, default="")
    #: The API key's mode (a test key and a live key list different objects, with different ids).
    livemode: Mapped[bool] = mapped_column(sa.Boolean, primary_key=True, default=False)
    #: When this run started: the synthetic events of one run share it, so a resumed run's
    #: re-recorded objects are duplicates, not new snapshots.
    run_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The id of the last object recorded (Stripe's `starting_after`); null before the first page.
    starting_after: Mapped[str | None] = mapped_column(sa.String(255))
    #: That object's `created`: when Stripe no longer has it, the list resumes at `created[lte]`.
    starting_after_created: Mapped[int | None] = mapped_column(sa.BigInteger)
    listed: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Set when the list was read to its end; the next backfill starts a new run.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReconcileRun(Base):
    """One `webhook-service reconcile`: what it compared, the drift it found per field, what it repaired."""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: `cli:<OS user>`, `--actor`'s value or `scheduler`.
    actor: Mapped[str] = mapped_column(sa.String(255))
    checked: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Field name → number of invoices (or customers) whose mirrored value differs from Stripe's.
    drift: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    repaired: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: What the run compared (`since`, `customer`, `account`, `limit`).
    scope: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    #: True for a run over the whole window (no customer, account or limit): only such a run says
    #: the mirror has no drift, so /metrics reports the newest of these, never a narrower check.
    whole: Mapped[bool] = mapped_column(sa.Boolean, default=True)

    __table_args__ = (sa.Index("ix_reconcile_runs_started_at", "started_at"),)
