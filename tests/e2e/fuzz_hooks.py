"""Schemathesis hooks of the fuzz run (loaded through ``SCHEMATHESIS_HOOKS``).

Schemathesis generates values that fit the OpenAPI schemas; the inputs that used to crash
the services fit them too, but are rare in its strategies. Half of the generated cases get
one value replaced by such an input: a NUL or a lone surrogate in a string, an instant or
a date near year 1 or 9999, a list cursor holding an integer beyond its column or an
extreme date. The ``errors_are_problems`` check holds every error answer to problem+json.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import schemathesis
from hypothesis import strategies as st

NASTY_TEXT = ["\x00", "a\x00b", "\ud800", "x\udfff", "\udbff\x00"]
# Path and query parameters travel URL-encoded as UTF-8, which cannot hold a lone
# surrogate (the client cannot send one; a server decodes bad bytes to U+FFFD).
NASTY_URL_TEXT = ["\x00", "a\x00b", "\x00\x00"]
NASTY_TIMESTAMPS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00",
    "1900-01-01T00:00:00+00:00",
]
NASTY_DATES = ["0001-01-01", "9999-12-31", "1970-01-01"]


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


NASTY_CURSORS = [
    _cursor(position)
    for position in (
        2**31,
        2**63,
        2**80,
        -1,
        ["0001-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000"],
        ["9999-12-31T23:59:59.999999-23:59", "00000000-0000-0000-0000-000000000000"],
        "\x00",
    )
] + ["\x00"]


def _nasty_for(name: str) -> st.SearchStrategy[str]:
    if name == "cursor":
        return st.sampled_from(NASTY_CURSORS)
    if name.endswith("_at"):
        return st.sampled_from(NASTY_TIMESTAMPS)
    if name in ("from", "to"):
        return st.sampled_from(NASTY_DATES)
    return st.sampled_from(NASTY_TEXT)


def _nasty_in_url(name: str) -> st.SearchStrategy[str]:
    return _nasty_for(name) if name in ("cursor", "from", "to") else st.sampled_from(NASTY_URL_TEXT)


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _string_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _string_leaves(v, (*path, i))]
    return []


def _replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    result = copy.deepcopy(value)
    target = result
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return result


def _leaf_name(path: tuple[Any, ...]) -> str:
    names = [step for step in path if isinstance(step, str)]
    return names[-1] if names else ""


def _poisoned(
    value: Any, nasty: Any = _nasty_for, *, widened: Any = None
) -> st.SearchStrategy[Any]:
    """``value`` as generated, or with one string replaced by a nasty one (of ``widened``,
    ``value`` with more string leaves, when given)."""
    base = value if widened is None else widened
    leaves = _string_leaves(base)
    if not leaves:
        return st.just(value)
    poisoned = st.sampled_from(leaves).flatmap(
        lambda path: nasty(_leaf_name(path)).map(lambda new: _replaced(base, path, new))
    )
    return st.one_of(st.just(value), poisoned)


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    return _poisoned(body)


# Optional query parameters a case may leave out, but where the crashes were.
_TARGETED_QUERY = ("cursor", "from", "to")


@schemathesis.hook
def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    declared = {p.name for p in operation.query} if operation is not None else set()
    widened = dict(query or {})
    for name in _TARGETED_QUERY:
        if name in declared and name not in widened:
            widened[name] = ""  # a string leaf the poisoning may pick
    return _poisoned(query, _nasty_in_url, widened=widened)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _poisoned(path_parameters, lambda _name: st.sampled_from(NASTY_URL_TEXT))


@schemathesis.check
def errors_are_problems(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx answer is ``application/problem+json``."""
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])
        if isinstance(content_type, list):
            content_type = content_type[0] if content_type else ""
        if not str(content_type).startswith("application/problem+json"):
            raise AssertionError(
                f"{response.status_code} answered as {content_type!r}, not problem+json"
            )
    return None
