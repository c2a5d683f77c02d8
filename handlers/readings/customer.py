"""The declared reading of a customer (`balance` was `account_balance` before 2019-10-17)."""

from __future__ import annotations

from handlers.readings.fields import Bool, Currency, Id, Int, Reading, StringMap, Text, Timestamp
from webhook_service.core.models import Customer


class CustomerReading(Reading):
    id = Id(Customer.id, required=True, allow_none=False)
    object = Text(max_length=64)
    name = Text(Customer.name)
    email = Text(Customer.email)
    description = Text()
    currency = Currency()
    balance = Int(allow_none=False)
    account_balance = Int(allow_none=False)
    created = Timestamp()
    deleted = Bool()
    livemode = Bool()
    metadata = StringMap()
