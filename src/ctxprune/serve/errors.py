"""Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), so that its clients
raise their usual exceptions (`openai.BadRequestError`, `RateLimitError`, …) with our message."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

TYPES = {
    400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
    429: "rate_limit_exceeded", 499: "client_closed", 500: "server_error", 503: "server_error",
    504: "timeout",
}  # fmt: skip


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers=None
) -> JSONResponse:
    body = {
        "message": message,
        "type": TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": code,
    }
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem as one line: which field, and what is wrong with it."""
    err = exc.errors()[0]
    field = str(err["loc"][-1]) if err.get("loc") else None
    if err.get("type") == "missing":
        return f"missing required field {field!r} (multipart form data)", field
    return f"invalid {field!r}: {err.get('msg', 'bad value')}", field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return error_response(400, message, field, "invalid_value")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
