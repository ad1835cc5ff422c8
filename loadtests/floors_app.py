"""The floors under POST /v1/score: what any design on this stack pays before deciding.

Served exactly like the API (`kit.serving.run`: uvicorn, uvloop, httptools, a listener per
worker, the same worker count); `python loadtests/floors_app.py --port P --workers N`:

- POST /floor/http validates the same `ScoreRequest` body and returns a fixed answer: the
  cost of HTTP, FastAPI and pydantic alone, with no source, model, cache or database.
- POST /floor/audit does that plus the one thing no decision may skip: a durable audit row
  (the realistic row of loadtests/records.py) through the service's own `AuditWriter`, with
  group commit, encryption and hash chaining, committed before the answer.

The gap between these floors and a bare model server is what the ratio goal runs into.
"""

from __future__ import annotations

import argparse
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from records import record_factory

from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.writer import AuditWriter
from b2bscore.kit import serving
from b2bscore.kit.db import create_engine, create_sessionmaker
from b2bscore.scoring.schemas import ScoreRequest


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One engine and one audit writer per worker, as the API holds them."""
    engine = create_engine(os.environ["FLOOR_DATABASE_URL"])
    key = base64.b64decode(os.environ["FLOOR_DATA_KEY"])
    app.state.writer = AuditWriter(
        create_sessionmaker(engine),
        DataKeyring({"floor": key}),
        # The same key serves as the chain key: only the cost of a keyed link matters here.
        ChainKeyring({"floor": key}),
    )
    app.state.record = record_factory()
    app.state.tenant_id = os.environ["FLOOR_TENANT_ID"]
    try:
        yield
    finally:
        await app.state.writer.close()
        await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/floor/http")
async def http_floor(body: ScoreRequest) -> dict[str, str]:
    """A validated request and a fixed answer."""
    return {"siren": body.siren, "decision": "approve"}


@app.post("/floor/audit")
async def audit_floor(body: ScoreRequest) -> dict[str, str]:
    """A validated request and a committed audit row."""
    row = await app.state.writer.record(app.state.record(app.state.tenant_id))
    return {"siren": body.siren, "decision_id": row.id}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    serving.run(
        "floors_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
