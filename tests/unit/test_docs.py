"""The project's docs cover every endpoint the services serve and link only inside the repo."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from services.charities.app import create_app as create_charities_app
from services.donations.app import create_app as create_donations_app
from services.orders.app import create_app as create_orders_app

ROOT = Path(__file__).parents[2]
API_GUIDE = ROOT / "docs" / "API.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHODS = {"get", "put", "post", "patch", "delete"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
LOCAL_URL = re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")


def _operations(app: FastAPI) -> list[str]:
    return [
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in METHODS
    ]


@pytest.mark.parametrize(
    "create_app",
    [create_orders_app, create_donations_app, create_charities_app],
    ids=["orders", "donations", "charities"],
)
def test_every_operation_of_the_openapi_document_is_in_the_api_guide(
    create_app: Callable[[], FastAPI],
) -> None:
    operations = _operations(create_app())
    assert len(operations) >= 5  # the documents were read, not empty
    guide = API_GUIDE.read_text()
    # "POST /v1/orders" must appear on its own, not only inside "POST /v1/orders/batch".
    missing = [op for op in operations if not re.search(re.escape(op) + r"(?![\w/{}.-])", guide)]
    assert not missing, f"docs/API.md does not describe {missing}"


def _links(path: Path) -> list[str]:
    text = path.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code is not a link
    return LINK.findall(text)


def test_docs_link_only_inside_the_repository() -> None:
    problems: list[str] = []
    for doc in DOCS:
        if "../shared" in doc.read_text():
            problems.append(f"{doc.name}: mentions ../shared (the team folder)")
        for target in _links(doc):
            if LOCAL_URL.match(target):
                continue  # the local stack's own URLs
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                problems.append(f"{doc.name}: link outside the repository: {target}")
                continue
            file_part = target.split("#", 1)[0]
            if not file_part:
                continue  # an anchor in the same file
            resolved = (doc.parent / file_part).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{doc.name}: link leaves the repository: {target}")
            elif not resolved.exists():
                problems.append(f"{doc.name}: link to a missing file: {target}")
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_links() -> None:
    """Guards the check above against a pattern that silently matches nothing."""
    targets = _links(ROOT / "README.md")
    assert "docs/API.md" in targets
    assert "docs/OPERATIONS.md" in targets
