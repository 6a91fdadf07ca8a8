"""Every error answer is a :class:`~serving.schemas.Problem`: the mapping of errors to statuses.

Bad input → 422 (413 past the size limits), no or wrong token → 401 / 403, no model yet →
503, anything else → 500 with a request id and no internals. Routes raise plain
exceptions (``ValueError`` from a use-case, ``HTTPException`` for a status of their own);
:func:`install` turns each into its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from models.base import ModelFormatError, NotFittedError
from serving.schemas import Problem

_log = logging.getLogger("serving.app")


class PayloadTooLargeError(ValueError):
    """A request beyond the configured size limits (413)."""


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give: all are a :class:`Problem`."""
    return {code: {"model": Problem} for code in codes}


def problem(status: int, detail: str | list, request: Request) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return JSONResponse(
        status_code=status,
        content=Problem(detail=detail, request_id=request_id).model_dump(),
    )


#: Pydantic's bound errors, reworded with the bound in short form (1e+30, not 31 digits).
_BOUND_ERRORS = {"greater_than": "greater than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}


def validation_details(error: RequestValidationError) -> list[str]:
    """One line per wrong field: its path, a colon, what is wrong."""
    messages = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") in _BOUND_ERRORS and item.get("ctx"):
            (bound,) = item["ctx"].values()
            message = f"{item.get('input')!r} is not {_BOUND_ERRORS[item['type']]} {bound:g}"
        messages.append(f"{location}: {message}" if location else message)
    return messages


#: Errors whose message is the answer, and their status.
_STATUS: dict[type[Exception], int] = {PayloadTooLargeError: 413, ValueError: 422,
                                       NotFittedError: 503}


def install(app: FastAPI) -> None:
    """Map every error a route can raise to its :class:`Problem` answer."""

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        response = problem(error.status_code, str(error.detail), request)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem(422, validation_details(error), request)

    def answer(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(request: Request, error: Exception) -> JSONResponse:
            return problem(status, str(error), request)
        return handler

    # The most derived class wins: a PayloadTooLargeError is a ValueError answered with 413.
    for kind, status in _STATUS.items():
        app.add_exception_handler(kind, answer(status))

    @app.exception_handler(ModelFormatError)
    async def _bad_model(request: Request, error: ModelFormatError) -> JSONResponse:
        _log.error("request %s: model unusable: %s", request.state.request_id, error)
        return problem(503, "the loaded model cannot be used; see the service log", request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return problem(500, "internal error; quote the request id when reporting it", request)
