"""`b2bscore providers parse PROVIDER FILE`: read a captured payload with the serving code.

Prints the normalised record as one JSON object on its last line and exits 0, or exits 1
with a message naming the field (or the line and column) at fault. The parsers are the
adapters' own: what this command accepts is what a decision accepts.
"""

from __future__ import annotations

import enum
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

providers_app = typer.Typer(help="Provider payloads: parse captured files.", no_args_is_help=True)


class Provider(enum.StrEnum):
    """The providers whose payloads the command reads."""

    OPEN_BANKING = "open_banking"
    SIRENE = "sirene"
    BODACC = "bodacc"
    FEC = "fec"


class ParseFailure(Exception):
    """The payload cannot be read; the message names the field or the line and column."""


def _json_body(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ParseFailure(f"body: not UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ParseFailure(
            f"body: not JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _money(value: Decimal) -> str:
    return f"{value:f}"


def parse_sirene(raw: bytes) -> dict[str, Any]:
    """A Sirene ``GET /siren/{siren}`` answer, normalised (an unknown SIREN is ``absent``)."""
    from b2bscore.sources import registry, sirene
    from b2bscore.sources.errors import SourceFormatError

    body = _json_body(raw)
    message = sirene.absent_message(body)
    if message is not None:
        return {"absent": True, "siren": None, "message": message}
    try:
        unit = sirene.parse_unit(body)
        data = registry.parse_raw({"sirene": body, "bodacc": None}, date.today())
    except SourceFormatError as error:
        raise ParseFailure(error.reason) from None
    return {
        "absent": False,
        "siren": data.siren,
        "active": data.active,
        "created": _iso(data.created_on),
        "legal_form": data.legal_form,
        "naf": data.naf,
        "headcount_band": data.headcount_band,
        "category": data.category,
        "restricted": unit.statutDiffusionUniteLegale == "P",
    }


def parse_bodacc(raw: bytes) -> dict[str, Any]:
    """A BODACC explore v2.1 answer, normalised: kept and dropped records, proceedings."""
    from b2bscore.sources import bodacc
    from b2bscore.sources.errors import SourceFormatError

    try:
        notices = bodacc.parse_records(_json_body(raw))
    except SourceFormatError as error:
        raise ParseFailure(error.reason) from None
    state = bodacc.lifecycle(notices.announcements)
    proceedings = [
        {
            "date": _iso(a.judged_on or a.published_on),
            "published": _iso(a.published_on),
            "family": a.family,
            "kind": a.kind,
            "nature": a.nature,
        }
        for a in reversed(notices.announcements)
        if a.kind is not None
    ]
    return {
        "announcements": len(notices.announcements),
        "dropped": notices.dropped,
        "first_error": notices.first_error,
        "families": sorted({a.family for a in notices.announcements}),
        "proceedings": proceedings,
        "proceedings_opened_on": _iso(state.opened_on),
        "ongoing_proceeding": state.ongoing,
    }


def parse_fec_file(raw: bytes, name: str | None = None) -> dict[str, Any]:
    """One FEC file, validated and mapped on the PCG (one fiscal year)."""
    from b2bscore.sources import accounting
    from b2bscore.sources.fec import FecError

    try:
        books = accounting.read_fec(raw, name)
    except FecError as error:
        raise ParseFailure(str(error)) from None
    s = accounting.statement_of_books(books)
    year = {
        "closing_date": _iso(s.closing_date),
        "first_entry": _iso(books.first_date),
        "last_entry": _iso(books.last_date),
        "revenue": _money(s.revenue),
        "ebitda": _money(s.ebitda),
        "result": _money(s.net_income),
        "equity": _money(s.equity),
        "total_assets": _money(s.total_assets),
        "total_liabilities": _money(s.total_liabilities),
        "cash": _money(s.cash),
        "financial_debt": _money(s.financial_debt),
        "balanced": books.balanced,
        "assets_equal_liabilities_plus_equity": s.total_assets == s.total_liabilities + s.equity,
        "entries": books.entries,
        "lines": books.lines,
        "opening_lines": books.opening_lines,
        "total_debit": _money(books.total_debit),
    }
    return {"fiscal_years": [year]}


def parse_open_banking(raw: bytes) -> dict[str, Any]:
    """The open-banking raw-record document, through the open-banking adapter."""
    from b2bscore.sources import open_banking

    parse_document = getattr(open_banking, "parse_document", None)
    if parse_document is None:
        raise ParseFailure("open_banking: this build has no open_banking.parse_document yet")
    try:
        result: dict[str, Any] = parse_document(raw)
    except ValueError as error:  # SourceError and pydantic errors are reported as such
        raise ParseFailure(str(error)) from None
    except Exception as error:
        reason = getattr(error, "reason", None)
        if isinstance(reason, str):
            raise ParseFailure(reason) from None
        raise
    return result


def parse_payload(provider: Provider, raw: bytes, name: str | None = None) -> dict[str, Any]:
    """The normalised record of one captured payload; ParseFailure says what is wrong."""
    if provider is Provider.SIRENE:
        return parse_sirene(raw)
    if provider is Provider.BODACC:
        return parse_bodacc(raw)
    if provider is Provider.FEC:
        return parse_fec_file(raw, name)
    return parse_open_banking(raw)


@providers_app.command("parse")
def parse_command(
    provider: Annotated[Provider, typer.Argument(help="open_banking, sirene, bodacc or fec")],
    file: Annotated[Path, typer.Argument(help="The captured payload", exists=True, dir_okay=False)],
) -> None:
    """Parse FILE as PROVIDER sends it; print the normalised record as JSON (last line)."""
    raw = file.read_bytes()
    try:
        record = parse_payload(provider, raw, file.name)
    except ParseFailure as error:
        typer.echo(f"{file.name}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(record, ensure_ascii=False, sort_keys=True))
