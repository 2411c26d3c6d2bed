"""What an API route takes and answers, declared beside its handler (as ``core.access``).

``@api_doc(summary=…, request=Model, response=Model)`` names the pydantic models a
handler validates its body with and shapes its answer by; admin generates the
OpenAPI document (``GET /api/v1/openapi.json``) from these markers, the routes and
their ``core.access`` permissions, so the reference never drifts from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from core.access import H

_DOC_ATTR = "__siyu_api_doc__"


@dataclass(frozen=True)
class ApiDoc:
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # Other media types the body may come in (same schema), e.g. JSON lines.
    request_media: tuple[str, ...] = ("application/json",)
    # The statuses the handler answers with the error body, besides the guard's own.
    errors: tuple[int, ...] = ()
    # The query string, validated with this model (its fields are the parameters).
    query: type[BaseModel] | None = None
    # Descriptions of the path's ``{name}`` parameters (every one is listed regardless).
    path_params: Mapping[str, str] = field(default_factory=dict)
    # The success status (201 for a creation).
    status: int = 200


def api_doc(
    *,
    summary: str,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    request_media: tuple[str, ...] = ("application/json",),
    errors: tuple[int, ...] = (),
    query: type[BaseModel] | None = None,
    path_params: Mapping[str, str] | None = None,
    status: int = 200,
) -> Callable[[H], H]:
    doc = ApiDoc(
        summary=summary,
        request=request,
        response=response,
        request_media=request_media,
        errors=errors,
        query=query,
        path_params=dict(path_params or {}),
        status=status,
    )

    def mark(handler: H) -> H:
        setattr(handler, _DOC_ATTR, doc)
        return handler

    return mark


def api_doc_of(handler: object) -> ApiDoc | None:
    found = getattr(handler, _DOC_ATTR, None)
    return found if isinstance(found, ApiDoc) else None
