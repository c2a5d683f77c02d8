"""Customer rows. Issue-2 scope: the row an invoice needs, created from the invoice's hints.

Hints merge order-free: the row keeps the values from the greatest version key, and customer
events (added with the credit work) use keys that outrank every invoice hint.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from webhook_service.models import Customer


@dataclass(frozen=True)
class CustomerHints:
    """What an invoice says about its customer, and how new that is."""

    name: str | None
    email: str | None
    currency: str | None
    livemode: bool
    version_key: str


def ensure_customer(session: Session, customer_id: str, hints: CustomerHints) -> Customer:
    """Return the customer row, creating it when the invoice arrives first; newer hints refresh it."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        customer = Customer(id=customer_id, version_key="", livemode=hints.livemode)
        session.add(customer)
    if hints.version_key > (customer.version_key or ""):
        customer.name = hints.name
        customer.email = hints.email
        customer.currency = hints.currency or customer.currency
        customer.livemode = hints.livemode
        customer.version_key = hints.version_key
    return customer
