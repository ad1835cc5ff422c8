"""Signed checkpoints of every chain head, published outside the database.

A keyed chain stops an insider from forging or re-linking rows, but not from cutting
rows off its end, nor from deleting a whole chain: what is left still verifies. A
checkpoint records the head (seq, row hash) of every (tenant, mode) chain, signed with
an Ed25519 key the database does not hold, and goes to a place the service only ever
appends to: a JSON-lines file opened O_APPEND (the embedded default), or a directory
where each checkpoint is a new file created once (a write-once mount, an object store
under retention lock). Each checkpoint carries the SHA-256 of the one before it, so a
removed or edited checkpoint breaks the sequence. `b2bscore audit verify` then checks
that every chain still reaches the head its latest checkpoint recorded, with the same
hash. docs/SECURITY.md documents the format for auditors who verify without the service.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from b2bscore.decisions.chain import GENESIS_HASH, ChainHead
from b2bscore.decisions.crypto import KeyringError
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.kit.files import create_private, make_private, private_dir
from b2bscore.kit.settings import Settings
from b2bscore.tenants.repository import TenantRepository

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
SIGNING_KEY_FILE_NAME: Final = "audit_signing_key"
PUBLIC_KEY_FILE_NAME: Final = "audit_signing_key.pub.pem"
MODES: Final = ("live", "test")
_TAIL_BLOCK: Final = 64 * 1024


def canonical(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: what is signed and what is hashed."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """'ed25519:' + the first 16 hex digits of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), what auditors are given."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; KeyringError for anything else."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise KeyringError("not a PEM public key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise KeyringError("the checkpoint key must be Ed25519")
    return key


def _private_from_seed(encoded: str) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise KeyringError("the audit signing key is not valid base64") from error
    if len(seed) != 32:
        raise KeyringError("the audit signing key must be a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


class CheckpointError(Exception):
    """The checkpoint store cannot be appended to safely."""


class CheckpointSigner:
    """The Ed25519 key that signs checkpoints."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointSigner:
        """B2BSCORE_AUDIT_SIGNING_KEY, else a key file under var_dir (created once, 0600).

        The public key is written next to a generated key file, for auditors.
        """
        if settings.audit_signing_key is not None:
            return cls(_private_from_seed(settings.audit_signing_key.get_secret_value()))
        if settings.is_production:
            # Fail closed: a signing key made up at start would vouch for whatever is there.
            raise KeyringError(
                "production mode needs its checkpoint signing key: set "
                "B2BSCORE_AUDIT_SIGNING_KEY (create it with `b2bscore audit generate-keys`)"
            )
        path = settings.var_dir / SIGNING_KEY_FILE_NAME
        seed = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        create_private(path, base64.b64encode(seed) + b"\n")
        make_private(path)
        signer = cls(_private_from_seed(path.read_text()))
        public = settings.var_dir / PUBLIC_KEY_FILE_NAME
        if not public.exists():
            public.write_text(public_key_pem(signer.public_key))
        return signer

    @classmethod
    def existing(cls, settings: Settings) -> CheckpointSigner | None:
        """The configured signer, or None where there is none (never creates a key)."""
        if (
            settings.audit_signing_key is None
            and not (settings.var_dir / SIGNING_KEY_FILE_NAME).exists()
        ):
            return None
        return cls.from_settings(settings)

    def sign(self, unsigned: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint with its key id and signature over its canonical JSON."""
        body = {**unsigned, "key_id": self.key_id}
        signature = self._key.sign(canonical(body))
        return {**body, "sig": base64.b64encode(signature).decode()}


@dataclass(frozen=True, slots=True)
class Published:
    """One checkpoint as stored: its exact bytes and its decoded fields."""

    raw: bytes
    record: dict[str, Any]

    @property
    def number(self) -> int:
        """Position in the sequence, from 1."""
        return int(self.record["n"])

    @property
    def time(self) -> datetime:
        """When it was published (UTC)."""
        return datetime.fromisoformat(self.record["time"])

    @property
    def digest(self) -> str:
        """SHA-256 of its exact bytes, which the next checkpoint carries as `prev`."""
        return hashlib.sha256(self.raw).hexdigest()

    def heads(self) -> dict[tuple[str, str], ChainHead]:
        """The chain heads it records, by (tenant, mode)."""
        return {
            (h["tenant"], h["mode"]): ChainHead(h["tenant"], h["mode"], h["seq"], h["hash"])
            for h in self.record["heads"]
        }


class CheckpointStore(abc.ABC):
    """Where checkpoints go; only ever appended to, never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def at(cls, path: Path) -> CheckpointStore:
        """A directory store for an existing directory, else a JSON-lines file."""
        if path.is_dir():
            return DirectoryStore(path)
        return JsonLinesStore(path)

    @abc.abstractmethod
    def exists(self) -> bool:
        """True when something was ever published here."""
        ...

    @abc.abstractmethod
    def read(self) -> list[bytes]:
        """Every stored checkpoint's exact bytes, in publication order."""
        ...

    def last(self) -> bytes | None:
        """The latest checkpoint's exact bytes, or None before the first."""
        stored = self.read()
        return stored[-1] if stored else None

    @abc.abstractmethod
    def append(self, number: int, raw: bytes) -> bool:
        """Store checkpoint number; False when that number is already stored."""
        ...

    @contextlib.contextmanager
    def lock(self, *, wait: bool) -> Iterator[bool]:
        """Exclusive between the processes of this host; yields False when busy (wait=False)."""
        lock_path = self._lock_path()
        private_dir(lock_path.parent)
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    @abc.abstractmethod
    def _lock_path(self) -> Path: ...


class JsonLinesStore(CheckpointStore):
    """One checkpoint per line of a file that is only ever opened O_APPEND."""

    def exists(self) -> bool:
        """True when the file exists."""
        return self.path.exists()

    def read(self) -> list[bytes]:
        """The lines, without their newlines (a torn last line is kept, and fails to verify)."""
        if not self.path.exists():
            return []
        return [line for line in self.path.read_bytes().split(b"\n") if line]

    def last(self) -> bytes | None:
        """The last line, read backwards from the end: publishing never reads the whole file."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            tail, position = b"", end
            while position > 0:
                step = min(_TAIL_BLOCK, position)
                position -= step
                handle.seek(position)
                tail = handle.read(step) + tail
                lines = [line for line in tail.split(b"\n") if line]
                # A complete last line has a newline before it (or starts the file).
                if len(lines) > 1 or (lines and position == 0):
                    return lines[-1]
        return None

    def append(self, number: int, raw: bytes) -> bool:
        """One write of the whole line under O_APPEND: never interleaved, never rewriting."""
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, raw + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")


class DirectoryStore(CheckpointStore):
    """One write-once file per checkpoint, named by its number (object stores, WORM mounts)."""

    def exists(self) -> bool:
        """True when the directory holds a checkpoint."""
        return bool(self._files())

    def _files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob("checkpoint-*.json"))

    def read(self) -> list[bytes]:
        """Each file's bytes, by number."""
        return [p.read_bytes().rstrip(b"\n") for p in self._files()]

    def last(self) -> bytes | None:
        """The highest-numbered file's bytes."""
        files = self._files()
        return files[-1].read_bytes().rstrip(b"\n") if files else None

    def append(self, number: int, raw: bytes) -> bool:
        """Create checkpoint-<number>.json once: another host that published it first wins."""
        private_dir(self.path)
        target = self.path / f"checkpoint-{number:012d}.json"
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, raw + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _lock_path(self) -> Path:
        return self.path / ".lock"


async def current_heads(session: AsyncSession) -> list[ChainHead]:
    """The head of every (tenant, mode) chain, by index probes (no scan of the table)."""
    repository = DecisionRepository(session)
    tenant_ids = await TenantRepository(session).ids()
    heads = []
    for tenant_id in tenant_ids:
        for mode in MODES:
            head = await repository.chain_head(tenant_id, mode)
            if head is not None:
                heads.append(ChainHead(tenant_id, mode, head[0], head[1]))
    return heads


def _heads_json(heads: Sequence[ChainHead]) -> list[dict[str, Any]]:
    return [
        {"tenant": h.tenant_id, "mode": h.mode, "seq": h.seq, "hash": h.row_hash} for h in heads
    ]


def parse(raw: bytes) -> Published | None:
    """A stored checkpoint, or None when it is not one (torn, edited into garbage)."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("v") != FORMAT_VERSION:
        return None
    return Published(raw, record)


async def publish(
    session: AsyncSession,
    signer: CheckpointSigner,
    store: CheckpointStore,
    *,
    unless_newer_than: float | None = None,
    wait: bool = True,
) -> Published | None:
    """Sign and append a checkpoint of every chain head; the checkpoint, or None if skipped.

    unless_newer_than (seconds): skip when the latest checkpoint is that recent, or
    when no head moved since it; that is what makes the servers' periodic publication
    idempotent across workers. wait=False: skip when another process holds the lock.
    """
    with store.lock(wait=wait) as locked:
        if not locked:
            return None
        latest = await asyncio.to_thread(store.last)
        last = parse(latest) if latest is not None else None
        if latest is not None and last is None:
            # Chaining onto garbage would hide it: someone must look at the store first.
            raise CheckpointError(f"the last checkpoint in {store.path} is unreadable")
        now = datetime.now(UTC)
        heads = await current_heads(session)
        if unless_newer_than is not None and last is not None:
            age = (now - last.time).total_seconds()
            if age < unless_newer_than or last.record.get("heads") == _heads_json(heads):
                return None
        number = 1 if last is None else last.number + 1
        record = signer.sign(
            {
                "v": FORMAT_VERSION,
                "n": number,
                "time": now.isoformat(),
                "prev": GENESIS_HASH if last is None else last.digest,
                "heads": _heads_json(heads),
            }
        )
        raw = canonical(record)
        if not await asyncio.to_thread(store.append, number, raw):
            return None
        return Published(raw, record)


@dataclass(slots=True)
class CheckpointLog:
    """What the stored checkpoints say: problems found, and the latest valid checkpoint."""

    count: int = 0
    problems: list[str] = field(default_factory=list)
    latest: Published | None = None


def verify_log(stored: Sequence[bytes], public_keys: Sequence[Ed25519PublicKey]) -> CheckpointLog:
    """Check numbering, the link of each checkpoint to the one before, and every signature.

    latest is the last checkpoint whose signature verifies, so that a damaged log still
    anchors the chains as far as it can.
    """
    keys = {key_id_of(key): key for key in public_keys}
    result = CheckpointLog(count=len(stored))
    previous: Published | None = None
    for position, raw in enumerate(stored, start=1):
        checkpoint = parse(raw)
        if checkpoint is None:
            result.problems.append(f"checkpoint {position}: not a checkpoint (torn or edited)")
            previous = None
            continue
        expected_prev = GENESIS_HASH if position == 1 else None
        if previous is not None:
            expected_prev = previous.digest
        if checkpoint.number != position:
            result.problems.append(
                f"checkpoint {position}: numbered {checkpoint.number} "
                "(a checkpoint before it was removed)"
            )
        elif expected_prev is not None and checkpoint.record.get("prev") != expected_prev:
            result.problems.append(
                f"checkpoint {position}: does not link to the one before it "
                "(a checkpoint was removed or edited)"
            )
        key = keys.get(str(checkpoint.record.get("key_id")))
        if key is None:
            result.problems.append(
                f"checkpoint {position}: signed by unknown key {checkpoint.record.get('key_id')}"
            )
        elif not _signature_ok(key, checkpoint.record):
            result.problems.append(f"checkpoint {position}: bad signature")
        else:
            result.latest = checkpoint
        previous = checkpoint
    return result


def _signature_ok(key: Ed25519PublicKey, record: Mapping[str, Any]) -> bool:
    body = {k: v for k, v in record.items() if k != "sig"}
    try:
        key.verify(base64.b64decode(str(record.get("sig", ""))), canonical(body))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# A generator of its own: the global one's state belongs to whoever seeded it (tests).
_JITTER = random.Random()  # noqa: S311 - jitter, not a secret


class CheckpointPublisher:
    """The servers' periodic publication, off the request path, once per interval overall.

    Every worker runs one; each wakes at a jittered interval and publishes only when it
    gets the store's lock without waiting and no other worker published in the last half
    interval (publish(unless_newer_than=...)).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        signer: CheckpointSigner,
        store: CheckpointStore,
        interval_seconds: float,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._signer = signer
        self._store = store
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        """Begin publishing in the background (no-op with a zero interval)."""
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def close(self) -> None:
        """Stop publishing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            # Jitter: workers started together do not all wake at the same instant.
            await asyncio.sleep(self._interval * _JITTER.uniform(0.9, 1.1))
            await self.publish_once()

    async def publish_once(self) -> Published | None:
        """One attempt; failures are logged once until the next success, never raised."""
        try:
            async with self._sessionmaker() as session:
                published = await publish(
                    session,
                    self._signer,
                    self._store,
                    unless_newer_than=self._interval / 2,
                    wait=False,
                )
        except Exception as error:  # a checkpoint that fails must not stop the next one
            if not self._failing:
                log.warning("audit checkpoint not published: %s", type(error).__name__)
            self._failing = True
            return None
        if self._failing:
            log.warning("audit checkpoints published again")
        self._failing = False
        return published
