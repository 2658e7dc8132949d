"""Every free-text field of every request body is ``Text``, so a lone surrogate is a 400."""

from __future__ import annotations

import typing

from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel

from trove_api.routers import device, events, files, identity, ops, snapshots, webhooks
from trove_api.routers import exec as exec_router
from trove_api.schemas.common import Text

ROUTERS = [device, events, exec_router, files, identity, ops, snapshots, webhooks]

# paths.normalize refuses lone surrogates in paths itself, with its own code (path_rejected).
PATH_FIELDS = {"path"}
_TEXT_CHECK = typing.get_args(Text)[1]


def _mentions(annotation: object, wanted: object) -> bool:
    if annotation is wanted:
        return True
    return any(_mentions(arg, wanted) for arg in typing.get_args(annotation))


def _is_text(annotation: object, metadata: list[object]) -> bool:
    if any(isinstance(m, AfterValidator) and m is _TEXT_CHECK for m in metadata):
        return True
    return any(
        (isinstance(arg, AfterValidator) and arg is _TEXT_CHECK) or _is_text(arg, [])
        for arg in typing.get_args(annotation)
    )


def _request_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for module in ROUTERS:
        for route in module.router.routes:
            if not isinstance(route, APIRoute):
                continue
            for param in route.dependant.body_params:
                annotation = param.field_info.annotation
                if (
                    isinstance(annotation, type)
                    and issubclass(annotation, BaseModel)
                    and annotation not in models
                ):
                    models.append(annotation)
    return models


def test_every_string_field_of_a_request_body_is_text() -> None:
    models = _request_models()
    assert len(models) >= 6, models  # exec, write, delete, snapshot, key, webhook, device…
    plain = [
        f"{model.__name__}.{name}"
        for model in models
        for name, info in model.model_fields.items()
        if name not in PATH_FIELDS
        and _mentions(info.annotation, str)
        and not _is_text(info.annotation, list(info.metadata))
    ]
    assert plain == [], "use schemas.common.Text for these fields"
