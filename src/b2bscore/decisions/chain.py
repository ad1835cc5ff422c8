"""The audit chains (one per tenant and mode), their keyed links, and their verification.

row_hash = HMAC-SHA256(chain key, prev_hash + canonical_json(content)), the key named by
the row's chain_key_id and held outside the database (decisions.chainkeys): an insider
who can write the table cannot recompute a link. content is every column except the
encrypted payload and its nonce (purged after retention without breaking the chain);
the payload stays covered through payload_digest, the SHA-256 of its plaintext. The
first row of a chain links to GENESIS_HASH.

Rows written before revision 0002 have no chain_key_id and an unkeyed link,
sha256(prev_hash + content), in one chain per tenant (both modes). They stay verifiable
under that rule; the first keyed row of a mode links to the last unkeyed row of that
mode, which pins them: changing one means forging a keyed link. No unkeyed row may
follow a published checkpoint (decisions.checkpoints), so none can be added later.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring, DecryptionError, KeyringError, payload_aad
from b2bscore.decisions.models import Decision
from b2bscore.decisions.repository import DecisionRepository

GENESIS_HASH: Final = "0" * 64

# Frozen list (not derived from the table) so that a column added later does not change
# the hash of rows written before it.
HASHED_FIELDS: Final[tuple[str, ...]] = (
    "id",
    "tenant_id",
    "seq",
    "created_at",
    "api_key_id",
    "mode",
    "siren",
    "product",
    "requested_amount",
    "idempotency_key",
    "request_hash",
    "request",
    "features",
    "model_id",
    "model_version",
    "probability_of_default",
    "score",
    "grade",
    "decision",
    "proposed_limit",
    "reasons",
    "sources",
    "degraded",
    "latency_ms",
    "payload_key_id",
    "payload_digest",
)


# Exact types that are already JSON data. Dispatching on type() first matters: every audit
# row walks ~100 values through these functions twice on the request path.
_JSON_SCALARS: Final = frozenset({str, int, bool, type(None)})


def jsonable(value: Any) -> Any:
    """value as plain JSON data: Decimals as strings, datetimes as ISO UTC, NaN as null."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    if kind is float:
        # JSON has no NaN/Infinity; a missing value is what they mean in features.
        return value if math.isfinite(value) else None
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is list:
        return [jsonable(v) for v in value]
    return _jsonable_other(value)


def _jsonable_other(value: Any) -> Any:
    # Subclasses and the types JSON cannot hold.
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in audit data")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=orjson.dumps) if isinstance(value, set | frozenset) else items
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    raise TypeError(f"cannot put {type(value).__name__} into the audit record")


def _hash_form(value: Any) -> Any:
    # JSONB keeps numbers as NUMERIC: 1e16 written as a float comes back as an int.
    # Integral floats hash as ints so a row read back hashes as it did when written.
    # The range is what JSONB hands back as an integer: signed and unsigned 64-bit.
    # Takes jsonable() output, whose containers are plain dicts and lists.
    kind = type(value)
    if kind is dict:
        return {k: _hash_form(v) for k, v in value.items()}
    if kind is list:
        return [_hash_form(v) for v in value]
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**64:
        return int(value)
    return value


_SORTED: Final = orjson.OPT_SORT_KEYS


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, Decimals as strings, datetimes as ISO UTC."""
    return orjson.dumps(_hash_form(jsonable(value)), option=_SORTED)


def sha256_hex(data: bytes) -> str:
    """SHA-256 hex digest."""
    return hashlib.sha256(data).hexdigest()


def row_content(decision: Decision) -> dict[str, Any]:
    """The hashed fields of a row."""
    return {name: getattr(decision, name) for name in HASHED_FIELDS}


def link_hash(
    prev_hash: str, body: bytes, chain_key_id: str | None, chain_keys: ChainKeyring | None
) -> str:
    """The link of a row whose canonical content is body: keyed, or unkeyed before 0002."""
    message = prev_hash.encode("ascii") + body
    if chain_key_id is None:
        return sha256_hex(message)
    if chain_keys is None:
        raise KeyringError("keyed audit rows need the audit chain keys")
    return chain_keys.mac(chain_key_id, message)


def compute_row_hash(
    prev_hash: str, decision: Decision, chain_keys: ChainKeyring | None = None
) -> str:
    """The row's link from prev_hash and its content, under its own chain_key_id's rule."""
    return link_hash(
        prev_hash, canonical_json(row_content(decision)), decision.chain_key_id, chain_keys
    )


# Known only under the chain lock; everything else is encoded before it is taken.
_CHAIN_TIME_FIELDS: Final = frozenset({"seq", "created_at"})
_SORTED_FIELDS: Final = tuple(sorted(HASHED_FIELDS))


# The JSON columns, which prepare_row fills with jsonable() output.
_JSON_FIELDS: Final = frozenset({"request", "features", "reasons", "sources"})


def _encoded_member(name: str, value: Any, *, json_ready: bool = False) -> bytes:
    # Strings, ints, booleans and None encode the same canonically or not: most columns.
    if value is None or type(value) in (str, int, bool):
        return orjson.dumps(name) + b":" + orjson.dumps(value)
    if json_ready:
        # jsonable() is idempotent: on its own output it would return an equal value.
        return orjson.dumps(name) + b":" + orjson.dumps(_hash_form(value), option=_SORTED)
    return orjson.dumps(name) + b":" + canonical_json(value)


@dataclass(frozen=True, slots=True)
class RowContent:
    """A row's hashed content, encoded before the row has its place in the chain.

    Joined with seq and created_at under the chain lock it gives exactly the bytes of
    canonical_json(row_content(row)): top-level keys in sorted order, each value encoded
    on its own. Encoding (~0.1 ms a row) then happens outside the lock that serializes
    a tenant's writers.
    """

    members: dict[str, bytes]

    @classmethod
    def of(cls, decision: Decision) -> RowContent:
        """Encode every hashed field but the chain's own, of a row from prepare_row."""
        return cls(
            {
                name: _encoded_member(
                    name, getattr(decision, name), json_ready=name in _JSON_FIELDS
                )
                for name in HASHED_FIELDS
                if name not in _CHAIN_TIME_FIELDS
            }
        )

    def row_hash(
        self, prev_hash: str, decision: Decision, chain_keys: ChainKeyring | None = None
    ) -> str:
        """compute_row_hash(prev_hash, decision, chain_keys), from the pre-encoded members."""
        members = {
            **self.members,
            **{name: _encoded_member(name, getattr(decision, name)) for name in _CHAIN_TIME_FIELDS},
        }
        body = b"{" + b",".join(members[name] for name in _SORTED_FIELDS) + b"}"
        return link_hash(prev_hash, body, decision.chain_key_id, chain_keys)


BreakReason = Literal[
    "seq_gap",
    "prev_hash",
    "row_hash",
    "chain_key",
    "unkeyed_row",
    "payload_digest",
    "payload_key",
    "checkpoint_missing_chain",
    "checkpoint_truncated",
    "checkpoint_hash",
]


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first row of a chain that does not verify (or the checkpoint it falls short of)."""

    tenant_id: str
    decision_id: str | None
    seq: int
    reason: BreakReason
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last row of one (tenant, mode) chain, as a checkpoint records it."""

    tenant_id: str
    mode: str
    seq: int
    row_hash: str


@dataclass(slots=True)
class VerifyResult:
    """Outcome of a chain verification."""

    tenants: int = 0
    chains: int = 0
    rows: int = 0
    broken: list[BrokenLink] = field(default_factory=list)
    heads: dict[tuple[str, str], ChainHead] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every chain verified."""
        return not self.broken


def payload_problem(row: Decision, keyring: DataKeyring) -> BreakReason | None:
    """Why the row's encrypted payload does not match its chained digest, or None.

    A purged payload (NULL ciphertext) is fine: its digest stays in the chain.
    """
    if row.payload_ciphertext is None or row.payload_nonce is None:
        return None
    try:
        plaintext = keyring.decrypt(
            row.payload_key_id,
            row.payload_nonce,
            row.payload_ciphertext,
            payload_aad(row.tenant_id, row.id),
        )
    except KeyringError:
        return "payload_key"
    except DecryptionError:
        return "payload_digest"
    return None if sha256_hex(plaintext) == row.payload_digest else "payload_digest"


def link_problem(row: Decision, chain_keys: ChainKeyring | None) -> BreakReason | None:
    """Why the row's own link does not match its content, or None (one row, no neighbours)."""
    try:
        expected = compute_row_hash(row.prev_hash, row, chain_keys)
    except KeyringError:
        return "chain_key"
    return None if hmac.compare_digest(expected, row.row_hash) else "row_hash"


async def read_problem(
    repository: DecisionRepository, row: Decision, chain_keys: ChainKeyring
) -> BreakReason | None:
    """Why a row about to be served does not verify on its own, or None.

    Its own link must match its content under its key. An unkeyed row (written before
    revision 0002) cannot be checked against a key; it must at least not come after a
    keyed row of its chain, where no unkeyed row was ever written.
    """
    reason = link_problem(row, chain_keys)
    if (
        reason is None
        and row.chain_key_id is None
        and await repository.keyed_before(row.tenant_id, row.mode, row.seq)
    ):
        reason = "unkeyed_row"
    return reason


class _Walk:
    """Expected next (seq, prev_hash) of a chain, and its first break."""

    def __init__(self, seq: int = 1, prev_hash: str = GENESIS_HASH) -> None:
        self.seq, self.prev_hash = seq, prev_hash
        self.broken = False

    def check(
        self, row: Decision, chain_keys: ChainKeyring | None, keyring: DataKeyring | None
    ) -> BreakReason | None:
        reason: BreakReason | None = None
        if row.seq != self.seq:
            reason = "seq_gap"
        elif row.prev_hash != self.prev_hash:
            reason = "prev_hash"
        else:
            reason = link_problem(row, chain_keys)
            if reason is None and keyring is not None:
                reason = payload_problem(row, keyring)
        if reason is None:
            self.seq, self.prev_hash = row.seq + 1, row.row_hash
        else:
            self.broken = True
        return reason


async def verify_chain(
    session: AsyncSession,
    tenant_id: str | None = None,
    *,
    chain_keys: ChainKeyring | None,
    keyring: DataKeyring | None = None,
    checkpoint: Mapping[tuple[str, str], ChainHead] | None = None,
) -> VerifyResult:
    """Walk each chain (or just tenant_id's) in seq order; name the first bad row of each.

    The unkeyed rows of a tenant (before revision 0002) are walked as the one chain they
    were; the keyed rows of each mode continue from the last unkeyed row of that mode.
    With a keyring, every payload still stored is also decrypted and checked against the
    digest the chain covers. With the heads of a checkpoint, every chain it names must
    still reach its head with the same hash, and no unkeyed row may lie beyond it.
    """
    repository = DecisionRepository(session)
    tenant_ids = [tenant_id] if tenant_id is not None else list(await repository.tenant_ids())
    if checkpoint is not None:
        # A tenant whose every row was deleted is still named by the checkpoint.
        named = {tid for tid, _ in checkpoint}
        if tenant_id is None:
            tenant_ids = sorted(set(tenant_ids) | named)
    result = VerifyResult()
    for tid in tenant_ids:
        result.tenants += 1
        await _verify_tenant(repository, tid, chain_keys, keyring, checkpoint, result)
    return result


async def _verify_tenant(
    repository: DecisionRepository,
    tenant_id: str,
    chain_keys: ChainKeyring | None,
    keyring: DataKeyring | None,
    checkpoint: Mapping[tuple[str, str], ChainHead] | None,
    result: VerifyResult,
) -> None:
    # The unkeyed rows: one chain per tenant, both modes, as written before 0002.
    unkeyed = _Walk()
    last_unkeyed: dict[str, Decision] = {}
    async with aclosing(repository.iter_chain(tenant_id, keyed=False)) as rows:
        async for row in rows:
            result.rows += 1
            last_unkeyed[row.mode] = row
            if unkeyed.broken:
                continue
            reason = unkeyed.check(row, None, keyring)
            if reason is not None:
                result.broken.append(BrokenLink(tenant_id, row.id, row.seq, reason, row.mode))
    modes = set(last_unkeyed) | set(await repository.modes(tenant_id))
    if checkpoint is not None:
        modes |= {mode for tid, mode in checkpoint if tid == tenant_id}
    for mode in sorted(modes):
        result.chains += 1
        start = last_unkeyed.get(mode)
        walk = _Walk() if start is None else _Walk(start.seq + 1, start.row_hash)
        head = None if start is None else ChainHead(tenant_id, mode, start.seq, start.row_hash)
        async with aclosing(repository.iter_chain(tenant_id, mode=mode, keyed=True)) as rows:
            async for row in rows:
                result.rows += 1
                if head is None or row.seq > head.seq:
                    head = ChainHead(tenant_id, mode, row.seq, row.row_hash)
                if walk.broken:
                    continue
                reason = walk.check(row, chain_keys, keyring)
                if reason is not None:
                    result.broken.append(BrokenLink(tenant_id, row.id, row.seq, reason, mode))
        if head is not None:
            result.heads[(tenant_id, mode)] = head
        if checkpoint is not None:
            problem = await _against_checkpoint(
                repository, tenant_id, mode, head, start, checkpoint
            )
            if problem is not None:
                result.broken.append(problem)


async def _against_checkpoint(
    repository: DecisionRepository,
    tenant_id: str,
    mode: str,
    head: ChainHead | None,
    last_unkeyed: Decision | None,
    checkpoint: Mapping[tuple[str, str], ChainHead],
) -> BrokenLink | None:
    """Whether the chain still reaches what the checkpoint recorded of it."""
    recorded = checkpoint.get((tenant_id, mode))
    if recorded is None:
        # A chain born after the checkpoint was written by this version: keyed from seq 1.
        if last_unkeyed is not None:
            return BrokenLink(tenant_id, last_unkeyed.id, last_unkeyed.seq, "unkeyed_row", mode)
        return None
    if last_unkeyed is not None and last_unkeyed.seq > recorded.seq:
        return BrokenLink(tenant_id, last_unkeyed.id, last_unkeyed.seq, "unkeyed_row", mode)
    if head is None:
        return BrokenLink(tenant_id, None, recorded.seq, "checkpoint_missing_chain", mode)
    if head.seq < recorded.seq:
        return BrokenLink(tenant_id, None, recorded.seq, "checkpoint_truncated", mode)
    row = await repository.at_seq(tenant_id, mode, recorded.seq)
    if row is None or row.row_hash != recorded.row_hash:
        decision_id = None if row is None else row.id
        return BrokenLink(tenant_id, decision_id, recorded.seq, "checkpoint_hash", mode)
    return None
