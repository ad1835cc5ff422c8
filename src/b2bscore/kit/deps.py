"""Dependency aliases used by the endpoints of every domain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState


def app_state(request: Request) -> AppState:
    """The application's long-lived resources."""
    state: AppState = request.app.state.b2b
    return state


# The dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, a thread hand-over per request for a mere attribute read.
async def get_state(request: Request) -> AppState:
    """The application's long-lived resources (dependency)."""
    return app_state(request)


async def get_settings_dep(request: Request) -> Settings:
    """The settings the application was created with (dependency)."""
    return app_state(request).settings


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed when the response is done."""
    async with opened_session(app_state(request).sessionmaker) as session:
        yield session


async def get_session_opener(request: Request) -> SessionOpener:
    """Opens sessions on demand, for paths that touch the database only sometimes."""
    # The hot score path (a cached principal, no idempotency replay) needs no session: a
    # generator dependency per request costs an exit stack and a cancel scope for nothing.
    return app_state(request).sessionmaker


State = Annotated[AppState, Depends(get_state)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
DbSession = Annotated[AsyncSession, Depends(get_db_session)]
Sessions = Annotated[SessionOpener, Depends(get_session_opener)]
