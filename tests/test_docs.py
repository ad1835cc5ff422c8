"""README.md and docs/ stand on their own: no link leaves the repository but to standards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Public standards and specifications a page may cite.
STANDARD_HOSTS = {"www.rfc-editor.org", "datatracker.ietf.org", "www.w3.org"}
URL = re.compile(r"https?://([^/\s)`'\",]+)")
LOCAL_HOSTS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]|host|sandbox-host)(:\d+)?$")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_path_leaves_the_repository(page: Path) -> None:
    assert "../" not in page.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_are_local_or_to_public_standards(page: Path) -> None:
    hosts = set(URL.findall(page.read_text()))
    outside = {h for h in hosts if not LOCAL_HOSTS.match(h) and h not in STANDARD_HOSTS}
    assert outside == set()


def test_every_page_readme_names_exists() -> None:
    named = set(re.findall(r"`(docs/[A-Z_]+\.md)`", (REPO / "README.md").read_text()))
    assert {"docs/ARCHITECTURE.md", "docs/SCALING.md"} <= named
    for path in named:
        assert (REPO / path).is_file(), path
