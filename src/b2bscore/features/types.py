"""The credit request as the features and the policy see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class Product(enum.StrEnum):
    """Credit products a lender can ask a decision for."""

    TERM_LOAN = "term_loan"
    CREDIT_LINE = "credit_line"
    INVOICE_FINANCING = "invoice_financing"
    BNPL = "bnpl"


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """What the lender asks for: a company, an amount in EUR and a product."""

    siren: str
    requested_amount: Decimal
    product: Product
