"""The declared reading of a customer (`balance` was `account_balance` before 2019-10-17)."""

from __future__ import annotations

from marshmallow import ValidationError

from handlers.readings.fields import (
    Bool,
    Currency,
    Id,
    Int,
    Reading,
    StringMap,
    StripeField,
    Text,
    Timestamp,
    check_int,
    describe,
)
from webhook_service.core.models import Customer


class CreditMap(StripeField):
    """`invoice_credit_balance`: currency → credit (positive = credit), when a payload includes it."""

    expected = "an object of integers by currency"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            self.fail(value)
        for key, amount in value.items():
            if not isinstance(key, str) or len(key) != 3:
                raise ValidationError(["keys must be currency codes"])
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise ValidationError({key: [f"expected an integer, got {describe(amount)}"]})
            try:
                check_int(amount)
            except ValidationError as exc:
                raise ValidationError({key: exc.messages}) from None
        return dict(value)


class CustomerReading(Reading):
    id = Id(Customer.id, required=True, allow_none=False)
    object = Text(max_length=64)
    name = Text(Customer.name)
    email = Text(Customer.email)
    description = Text()
    currency = Currency()
    balance = Int()  # null in the SDK's schema from 2023-10-16 on: the balance is not stated
    account_balance = Int(allow_none=False)
    created = Timestamp()
    deleted = Bool()
    livemode = Bool()
    metadata = StringMap()
    invoice_credit_balance = CreditMap()
