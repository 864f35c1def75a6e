"""Every example in the OpenAPI document is a valid value.

The document is read from `/openapi.json` of the app (no servers needed: the lifespan
that reaches the database does not run). Each example is checked twice: against its JSON
Schema (2020-12, with the document's components), and, where it is a property of one of
our API shapes, against the field's own validators (the IIN's check digit, a time zone's
existence, …), which the JSON Schema cannot express.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Annotated, Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter, ValidationError

import probation
from probation.app import create_app
from probation.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(jwt_secret="unit-" + "x" * 40)
    app = create_app(settings, database_url="postgresql://unused/none",
                     mqtt_url="mqtt://127.0.0.1:1")
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def examples(node: Any, path: str = "#") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(where, example, schema) for every example below `node`."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from examples(item, f"{path}/{i}")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("examples"), list):  # a schema's JSON Schema examples
        schema = {k: v for k, v in node.items() if k not in ("examples", "example")}
        for i, value in enumerate(node["examples"]):
            yield f"{path}/examples/{i}", value, schema
    if isinstance(node.get("examples"), dict) and "schema" in node:  # OpenAPI Example objects
        for name, ex in node["examples"].items():
            if isinstance(ex, dict) and "value" in ex:
                yield f"{path}/examples/{name}", ex["value"], node["schema"]
    if "example" in node:
        schema = node["schema"] if "schema" in node else {
            k: v for k, v in node.items() if k not in ("examples", "example")}
        yield f"{path}/example", node["example"], schema
    for key, value in node.items():
        if key not in ("examples", "example"):
            yield from examples(value, f"{path}/{key}")


def api_shapes() -> dict[str, type[BaseModel]]:
    """Our API shapes by class name (the name of their component schema)."""
    shapes: dict[str, type[BaseModel]] = {}
    for info in pkgutil.walk_packages(probation.__path__, "probation."):
        if info.name.rsplit(".", 1)[-1] not in ("models", "fields", "pagination"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                shapes[name] = obj
    return shapes


def test_the_document_has_examples(document: dict[str, Any]) -> None:
    where = [w for w, _, _ in examples(document)]
    assert any(w.startswith("#/components/schemas/SubjectCreate/properties/iin") for w in where)


def test_every_example_matches_its_schema(document: dict[str, Any]) -> None:
    components = document.get("components", {})
    bad = []
    for where, value, schema in examples(document):
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": components})
        if not validator.is_valid(value):
            bad.append((where, value))
    assert bad == []


def test_every_example_of_a_field_passes_the_fields_validators(document: dict[str, Any]) -> None:
    shapes = api_shapes()
    checked: list[str] = []
    bad = []
    for name, schema in document["components"]["schemas"].items():
        model = shapes.get(name)
        if model is None:
            continue
        for prop, prop_schema in schema.get("properties", {}).items():
            field = next((f for n, f in model.model_fields.items()
                          if (f.alias or n) == prop), None)
            found = list(examples(prop_schema, f"#/components/schemas/{name}/{prop}"))
            if field is None or not found:
                continue
            adapter: TypeAdapter[Any] = TypeAdapter(Annotated[field.annotation, field])
            for where, value, _ in found:
                checked.append(where)
                try:
                    adapter.validate_python(value)
                except ValidationError as e:
                    bad.append((where, value, e.errors()[0]["type"]))
    assert any("SubjectCreate/iin" in w for w in checked)  # the IIN's check digit ran
    assert bad == []


def test_an_iin_with_a_wrong_check_digit_is_caught() -> None:
    from probation.subjects.models import SubjectCreate

    field = SubjectCreate.model_fields["iin"]
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[field.annotation, field])
    adapter.validate_python("900101300017")
    with pytest.raises(ValidationError):
        adapter.validate_python("900101300014")  # the example the docs once showed
