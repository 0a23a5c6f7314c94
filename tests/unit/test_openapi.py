"""The three OpenAPI documents describe every schema, property and parameter; request
bodies have examples that the models themselves accept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.charities import schemas as charities_schemas
from services.charities.app import create_app as charities_app
from services.donations import schemas as donations_schemas
from services.donations.app import create_app as donations_app
from services.orders import schemas as orders_schemas
from services.orders.app import create_app as orders_app

APPS: dict[str, Callable[[], FastAPI]] = {
    "orders": orders_app,
    "donations": donations_app,
    "charities": charities_app,
}


def _document(service: str) -> dict[str, Any]:
    return APPS[service]().openapi()


@pytest.mark.parametrize("service", list(APPS))
def test_every_schema_and_property_has_a_description(service: str) -> None:
    schemas: dict[str, Any] = _document(service)["components"]["schemas"]
    missing = [name for name, schema in schemas.items() if not schema.get("description")]
    missing += [
        f"{name}.{prop}"
        for name, schema in schemas.items()
        for prop, spec in schema.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("service", list(APPS))
def test_every_parameter_has_a_description(service: str) -> None:
    missing = [
        f"{method.upper()} {path} {parameter['name']}"
        for path, ops in _document(service)["paths"].items()
        for method, op in ops.items()
        for parameter in op.get("parameters", [])
        if not parameter.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("service", list(APPS))
def test_every_request_body_has_an_example(service: str) -> None:
    document = _document(service)
    schemas = document["components"]["schemas"]
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]
        for ops in document["paths"].values()
        for op in ops.values()
        if "requestBody" in op
    ]
    assert bodies
    for body in bodies:
        refs = [body] if "$ref" in body else body.get("anyOf", [])
        for ref in (r["$ref"] for r in refs if "$ref" in r):
            schema = schemas[ref.rsplit("/", 1)[1]]
            assert schema.get("examples"), ref


@pytest.mark.parametrize("service", list(APPS))
def test_errors_are_documented_as_problems(service: str) -> None:
    document = _document(service)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert "application/problem+json" in response["content"], (path, method)


def _request_models() -> list[type[BaseModel]]:
    modules = (orders_schemas, donations_schemas, charities_schemas)
    return [
        model
        for module in modules
        for model in vars(module).values()
        if isinstance(model, type)
        and issubclass(model, BaseModel)
        and model.__module__ == module.__name__
        and model.model_config.get("extra") == "forbid"
    ]


@pytest.mark.parametrize("model", _request_models(), ids=lambda m: m.__name__)
def test_request_examples_are_valid_requests(model: type[BaseModel]) -> None:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    examples = extra["examples"]
    assert isinstance(examples, list)
    assert examples
    for example in examples:
        model.model_validate(example)
