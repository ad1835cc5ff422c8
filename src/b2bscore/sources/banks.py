"""The bank directory: each ASPSP's STET API, OAuth endpoints, version and quirks.

Banks are configured, not assumed: the client of a company's bank is built from its entry.
The directory shipped with the package (banks.json beside this module) can be replaced by
the file named in B2BSCORE_OPEN_BANKING_BANKS_FILE.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SANDBOX_PLACEHOLDER = "{sandbox}"
SANDBOX_BANKS = ("sandbox-stet14", "sandbox-stet16")

BankId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


class BankQuirks(BaseModel):
    """How a bank departs from the letter of its STET version.

    The parser accepts every variant whatever the quirks say (banks change without notice);
    the quirks decide which calls the client makes and record what the bank was seen to do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    balances_endpoint: bool = True  # GET /accounts/{id}/balances exists
    embedded_balances: bool = False  # balances come inside each account of GET /accounts
    numeric_amounts: bool = False  # amounts are JSON numbers rather than strings
    signed_amounts: bool = False  # debits carry a minus sign (the indicator still decides)
    datetime_dates: bool = False  # bookingDate / valueDate are date-times
    remittance_object: bool = False  # remittanceInformation is {unstructured, structured}
    bank_transaction_code: bool = False  # entries carry an ISO 20022 bankTransactionCode


class Bank(BaseModel):
    """One ASPSP of the directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: BankId
    name: str = Field(min_length=1, max_length=200)
    # The STET API root, version segment included (hrefs like "v1/accounts" resolve against
    # it without doubling the segment). "{sandbox}" stands for the sandbox's URL.
    api_base_url: str = Field(min_length=1)
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None  # RFC 7009; None: revoked on our side only
    stet_version: Annotated[str, StringConstraints(pattern=r"^1\.[4-6](\.[0-9]+){0,2}$")]
    sandbox: bool = False
    documentation: str | None = None
    quirks: BankQuirks = BankQuirks()

    def base_url(self, sandbox_url: str | None = None) -> str:
        """The API root, with the sandbox URL substituted for a sandbox bank."""
        if SANDBOX_PLACEHOLDER in self.api_base_url:
            if sandbox_url is None:
                raise ValueError(f"bank {self.id} needs the sandbox URL")
            return self.api_base_url.replace(SANDBOX_PLACEHOLDER, sandbox_url.rstrip("/"))
        return self.api_base_url

    def endpoint(self, url: str | None, sandbox_url: str | None = None) -> str | None:
        """One of the bank's OAuth endpoints, with the sandbox URL substituted."""
        if url is None or SANDBOX_PLACEHOLDER not in url:
            return url
        if sandbox_url is None:
            raise ValueError(f"bank {self.id} needs the sandbox URL")
        return url.replace(SANDBOX_PLACEHOLDER, sandbox_url.rstrip("/"))

    @model_validator(mode="after")
    def _live_banks_use_https(self) -> Bank:
        if not self.sandbox and not self.api_base_url.startswith("https://"):
            raise ValueError(f"bank {self.id}: a live bank's API must be https")
        return self


class BankDirectory(BaseModel):
    """Every bank the service can read, by id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    banks: tuple[Bank, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> BankDirectory:
        ids = [b.id for b in self.banks]
        if len(set(ids)) != len(ids):
            raise ValueError("bank ids must be unique")
        return self

    def get(self, bank_id: str) -> Bank | None:
        """The bank with this id, if listed."""
        return next((b for b in self.banks if b.id == bank_id), None)

    @property
    def live(self) -> tuple[Bank, ...]:
        """The real banks (not the sandbox's)."""
        return tuple(b for b in self.banks if not b.sandbox)


@lru_cache(maxsize=8)
def load_directory(path: Path | None = None) -> BankDirectory:
    """The directory in path, or the one shipped with the package; read once per path."""
    if path is None:
        text = resources.files("b2bscore.sources").joinpath("banks.json").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return BankDirectory.model_validate_json(text)


def sandbox_bank_of(siren: str) -> str:
    """The sandbox bank holding a company's accounts: a fixed draw from its SIREN."""
    # A hash rather than the SIREN's last digit: SIRENs end in a Luhn check digit, and
    # scenario SIRENs would otherwise all land on one side.
    digest = hashlib.sha256(b"stet-dialect:" + siren.encode()).digest()
    return SANDBOX_BANKS[digest[0] % len(SANDBOX_BANKS)]
