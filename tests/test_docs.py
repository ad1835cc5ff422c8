"""README.md and docs/ stand on their own: no link leaves the repository but to standards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Public standards and specifications a page may cite.
STANDARD_HOSTS = {
    "www.rfc-editor.org",
    "datatracker.ietf.org",
    "www.w3.org",
    "www.standardwebhooks.com",  # the Standard Webhooks specification
}
# Not links to read: the live providers' API endpoints, the values of B2BSCORE_LIVE_*_URL.
PROVIDER_ENDPOINTS = {
    "api.insee.fr",
    "bodacc-datadila.opendatasoft.com",
    "openbanking.lydia-app.com:8083",
    "www.17515.live.api.89c3.com",
}
URL = re.compile(r"https?://([^/\s)`'\",]+)")
LOCAL_HOSTS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]|host|bank|sandbox-host)(:\d+)?$")
# A relative path climbing out of the repository (not an ellipsis such as `.../v1`).
PARENT_PATH = re.compile(r"(?<![.\w])\.\./")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_path_leaves_the_repository(page: Path) -> None:
    assert not PARENT_PATH.findall(page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_are_local_or_to_public_standards(page: Path) -> None:
    hosts = set(URL.findall(page.read_text()))
    allowed = STANDARD_HOSTS | PROVIDER_ENDPOINTS
    outside = {h for h in hosts if not LOCAL_HOSTS.match(h) and h not in allowed}
    assert outside == set()


def test_every_page_readme_names_exists() -> None:
    named = set(re.findall(r"`(docs/[A-Z_]+\.md)`", (REPO / "README.md").read_text()))
    assert {"docs/ARCHITECTURE.md", "docs/SCALING.md"} <= named
    for path in named:
        assert (REPO / path).is_file(), path
