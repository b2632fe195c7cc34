"""The OpenAPI document: the committed copy is current, it describes exactly the routes the app
registers (with their access), the server publishes it, and it is valid OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis

from aichat.http import openapi
from aichat.app import create_app
from aichat.http.access import access_of

from .conftest import make_config

JSON_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
REGENERATE = "run `.venv/bin/python -m aichat.http.openapi > docs/openapi.json`"


def documented() -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): operation
            for path, operations in openapi.spec()["paths"].items()
            for method, operation in operations.items()}


def test_committed_copy_is_current() -> None:
    # Byte for byte, so regenerating an unchanged document leaves no diff to commit.
    committed = JSON_PATH.read_text(encoding="utf-8") if JSON_PATH.exists() else ""
    current = committed == openapi.to_json(openapi.spec())  # not in the assert: no 120 kB diff
    assert current, f"docs/openapi.json is stale: {REGENERATE}"


def test_every_route_is_documented_and_every_operation_routed(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    # HEAD (aiohttp adds one per GET) and OPTIONS (aiohttp-cors preflights) are not operations.
    routed = {(route.method, route.resource.canonical): route.handler
              for route in app.router.routes() if route.method not in ("HEAD", "OPTIONS")}
    described = documented()
    assert sorted(routed.keys() - described.keys()) == [], "routes missing from the document"
    assert sorted(described.keys() - routed.keys()) == [], (
        "documented operations the app does not route (is aichat.handlers.openapi in "
        "app.py's module list?)")
    for key, handler in routed.items():
        operation, access = described[key], access_of(handler)
        assert (operation.get("security") == []) == (access == "public"), key
        assert operation["summary"].endswith("(admin)") == (access == "admin"), key
        if access == "admin":
            assert "403" in operation["responses"], key


def test_every_reference_resolves() -> None:
    document = openapi.spec()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        return []

    for reference in refs(document):
        parts = reference.split("/")
        assert parts[:2] == ["#", "components"] and len(parts) == 4, reference
        assert parts[3] in document["components"][parts[2]], reference


async def test_served_publicly_as_plain_json(start) -> None:
    api = await start(app_mode="multi")
    async with api.client.get("/api/openapi.json") as response:
        assert response.status == 200, (
            await response.text(), "is aichat.handlers.openapi in app.py's module list?")
        assert response.content_type == "application/json"
        assert await response.json() == openapi.spec()  # the document itself, no envelope


def test_valid_openapi_31() -> None:
    for schema in (schemathesis.openapi.from_dict(openapi.spec()),
                   schemathesis.openapi.from_path(JSON_PATH)):
        schema.validate()  # against the OpenAPI 3.1 meta-schema
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == len(documented())
