"""Dependency aliases used by the endpoints of every domain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState


def get_state(request: Request) -> AppState:
    """The application's long-lived resources."""
    state: AppState = request.app.state.b2b
    return state


def get_settings_dep(request: Request) -> Settings:
    """The settings the application was created with."""
    return get_state(request).settings


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed when the response is done."""
    async with get_state(request).sessionmaker() as session:
        yield session


State = Annotated[AppState, Depends(get_state)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
DbSession = Annotated[AsyncSession, Depends(get_db_session)]
