"""Schemathesis against each running service's OpenAPI document: no 5xx, responses match.

Bounded: a fixed seed and a small number of examples per operation, so it runs in CI.
The hooks in ``fuzz_hooks.py`` mix in the inputs that used to crash the services (NUL,
lone surrogates, extreme instants and dates, out-of-range cursors) and add the check that
every error answer is problem+json.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from shared.auth import Role
from tests.conftest import bearer
from tests.e2e.conftest import Stack
from tests.support import report

EXAMPLES = 25
TOKENS = {
    "orders": bearer(Role.STOREFRONT, "fuzz-seller"),
    "donations": bearer(Role.SELLER, "fuzz-seller"),
    "charities": bearer(Role.ADMIN),
}


@pytest.mark.parametrize("service", ["orders", "donations", "charities"])
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    stack: Stack, service: str
) -> None:
    base = getattr(stack, service)
    report_file = Path("test-artifacts") / f"fuzz-{service}.txt"
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,errors_are_problems",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20261126",
        "--phases",
        "examples,coverage,fuzzing",
        # One worker: with two, hypothesis (inside schemathesis) parses lambda sources with
        # ast in parallel threads, which trips CPython 3.11's "AST constructor recursion
        # depth mismatch" now and then: a tool error, not a finding.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--header",
        f"Authorization: {TOKENS[service]['Authorization']}",
        env=dict(os.environ, SCHEMATHESIS_HOOKS="tests.e2e.fuzz_hooks"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    text = output.decode(errors="replace")
    await asyncio.to_thread(report_file.write_text, text)
    tried = re.findall(r"(\d+) generated", text)
    report(f"fuzz {service}: schemathesis exit {process.returncode}, cases {tried}")
    assert process.returncode == 0, text[-4000:]
