"""trove_api.problems.flatten_validation: FastAPI's error list becomes one string detail."""

from __future__ import annotations

from trove_api.problems import flatten_validation


def test_flatten_validation() -> None:
    errors = [
        {"loc": ("body", "path"), "msg": "Field required", "type": "missing"},
        {"loc": ("body", "items", 2, "name"), "msg": "String too long"},
        {"loc": ("body",), "msg": "Invalid JSON"},
        {"loc": ("query", "recursive"), "msg": "Input should be a valid boolean"},
        {"msg": "odd"},
        {},
    ]
    assert flatten_validation(errors) == (
        "path: Field required; items.2.name: String too long; Invalid JSON; "
        "query.recursive: Input should be a valid boolean; odd; invalid"
    )


def test_flatten_validation_empty() -> None:
    assert flatten_validation([]) == "Invalid request"


def test_flatten_validation_result_is_a_string() -> None:
    assert isinstance(flatten_validation([{"loc": ("body", 0), "msg": 3}]), str)
