"""Wire shapes of /v1/consents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from stdnum.fr import siren as std_siren

from b2bscore.sources.banks import BankId

# STET's AISP consent categories: balances and transactions of the granted accounts, and
# psuIdentity (GET /end-user-identity: who the connected user is, for the lender's KYB).
Scope = Literal["balances", "transactions", "identity"]
Status = Literal["pending", "active", "refused", "expired", "revoked"]


def _siren(value: str) -> str:
    compact = value.replace(" ", "")
    if not (len(compact) == 9 and compact.isdigit() and std_siren.is_valid(compact)):
        raise ValueError("not a valid SIREN")
    return compact


class ConsentCreate(BaseModel):
    """POST /v1/consents: which company, at which bank, what data, back to where."""

    model_config = ConfigDict(extra="forbid")

    siren: Annotated[str, Field(max_length=11), AfterValidator(_siren)]
    bank: BankId
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    redirect_uri: str = Field(min_length=8, max_length=2048)


class ConsentOut(BaseModel):
    """A consent as the lender sees it (account identifiers tokenized, tokens never)."""

    id: str
    siren: str
    bank: str
    status: Status
    requested_scopes: list[str]
    scopes: list[str]
    accounts: list[str]
    redirect_uri: str
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None
    last_synced_at: datetime | None
    snapshot_at: datetime | None
    # Why the last exchange or sync with the bank failed (a pending consent whose code
    # exchange is being retried says so here); None once one succeeds.
    last_error: str | None = None
    # The connected user as the bank names it (scope identity, from the last sync; purged
    # with the snapshot). None without that scope or before the first sync.
    holder: str | None = None


class ConsentCreated(ConsentOut):
    """The new consent and where to send the company's user."""

    authorization_url: str


class ConsentPage(BaseModel):
    """A page of consents, newest first."""

    items: list[ConsentOut]
    next_cursor: str | None


class SyncQueued(BaseModel):
    """POST /v1/consents/{id}/sync: the sync was queued (or one already waits)."""

    consent_id: str
    queued: bool


class RedirectIn(BaseModel):
    """POST /v1/consents/redirect-uris: a redirect_uri to allow (exact match)."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=8, max_length=2048)


class RedirectOut(BaseModel):
    """One redirect_uri on the tenant's allow-list for this mode."""

    uri: str
    created_at: datetime


class RedirectList(BaseModel):
    """The tenant's allow-list of redirect_uris in this mode."""

    items: list[RedirectOut]
