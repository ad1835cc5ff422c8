"""Cost of one audit row's link: the unkeyed SHA-256 of before revision 0002 vs the keyed HMAC.

Run: `.venv/bin/python -m loadtests.chain_cost`. The link is computed under the chain lock
for every row (RowContent.row_hash), so its cost is what a keyed chain adds per row to
the group commit; encoding the row's content happens before the lock and is unchanged.
"""

from __future__ import annotations

import secrets
import timeit
from collections.abc import Callable

from loadtests.records import record_factory

from b2bscore.decisions.chain import RowContent, canonical_json, row_content, sha256_hex
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.service import link_into_chain, prepare_row

NUMBER = 2_000
REPEAT = 50


def best_us(work: Callable[[], object]) -> float:
    """Best of REPEAT runs of NUMBER calls, in microseconds per call (least disturbed)."""
    return min(timeit.repeat(work, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6


def main() -> None:
    """Print µs per row for the unkeyed and keyed link, and for the whole under-lock step."""
    row = prepare_row(record_factory()("tenant-bench"), DataKeyring({"k": secrets.token_bytes(32)}))
    keys = ChainKeyring({"c1": secrets.token_bytes(32)})
    content = RowContent.of(row)
    prev = "ab" * 32
    link_into_chain(row, seq=1, prev_hash=prev, chain_keys=keys, content=content)

    def unkeyed() -> str:
        row.chain_key_id = None
        return content.row_hash(prev, row, None)

    def keyed() -> str:
        row.chain_key_id = "c1"
        return content.row_hash(prev, row, keys)

    def whole_step() -> None:
        link_into_chain(row, seq=2, prev_hash=prev, chain_keys=keys, content=content)

    message = prev.encode() + canonical_json(row_content(row))

    def sha256_only() -> str:
        return sha256_hex(message)

    def hmac_only() -> str:
        return keys.mac("c1", message)

    print(f"canonical row content: {len(message)} bytes")
    for _ in range(3):  # interleaved, so that machine noise hits both alike
        before, after = best_us(unkeyed), best_us(keyed)
        bare_before, bare_after = best_us(sha256_only), best_us(hmac_only)
        step = best_us(whole_step)
        print(
            f"link per row: unkeyed {before:.2f} us, keyed {after:.2f} us "
            f"(digest alone: sha256 {bare_before:.2f} us, HMAC {bare_after:.2f} us, "
            f"+{bare_after - bare_before:.2f} us); link_into_chain {step:.2f} us"
        )


if __name__ == "__main__":
    main()
