"""`ctxprune serve`: OpenAI's audio API (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/models`) over a backend that decodes, with `/health`, `/metrics` and a web page at `/`.

A request's path: the body is refused early when it is too large (`limits.BodyLimit`); the form is
checked (model, format, language, temperature) and the upload written to a temporary file; the backend
(`local.LocalBackend`: the scheduler in this process; `ray_app.RayBackend`: Ray Serve replicas) returns
its transcript; the answer is rendered in the format asked for (`responses`). Shutdown finishes what
was accepted.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from ctxprune.errors import CtxpruneError
from ctxprune.serve.errors import ApiError, install_error_handlers
from ctxprune.serve.limits import BodyLimit
from ctxprune.serve.local import AudioRequest
from ctxprune.serve.metrics import ServerMetrics
from ctxprune.serve.models import temperatures_for
from ctxprune.serve.responses import FORMATS, render

PAGE = files("ctxprune.serve") / "static"


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float = 25.0  # OpenAI's limit
    max_audio_s: float = 2 * 3600.0
    timeout_s: float = 600.0  # from arrival to answer
    snap: bool = True  # segment edges onto the speech Silero VAD hears

    def __post_init__(self):
        if min(self.max_upload_mb, self.max_audio_s, self.timeout_s) <= 0:
            raise CtxpruneError("upload size, audio duration and timeout limits must be above 0")


class Server:
    """The state behind the routes: a backend that decodes (this process's scheduler, or Ray Serve
    replicas), the metrics and the limits. It checks a request, spools its upload and renders the
    answer; the backend does the rest."""

    def __init__(self, backend, limits: Limits):
        self.backend, self.limits = backend, limits
        self.metrics = ServerMetrics(backend.depth, backend.in_flight)
        backend.metrics = self.metrics
        self.stopping = False

    def check(self, model: str, response_format: str, temperature: float, language: str) -> None:
        if model not in self.backend.names:
            raise ApiError(
                404, f"model {model!r} does not exist; served: {', '.join(self.backend.names)}",
                "model", "model_not_found",
            )  # fmt: skip
        if response_format not in FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "response_format")
        if not 0 <= temperature <= 1:
            raise ApiError(400, "temperature must be between 0 and 1", "temperature")
        if language != "auto" and language not in LANGUAGES:
            raise ApiError(
                400, f"unknown language {language!r}: use an ISO-639-1 code such as 'en'", "language"
            )

    async def answer(
        self,
        http: Request,
        task: str,
        upload: UploadFile,
        model: str,
        language: str | None,
        prompt: str,
        response_format: str,
        temperature: float,
    ) -> Response:
        arrived = time.monotonic()
        language = (language or "auto").strip().lower() or "auto"
        self.check(model, response_format, temperature, language)
        path = await asyncio.to_thread(_spool, upload)
        limits = self.limits
        request = AudioRequest(
            str(path), upload.filename or "upload", model, task, language, prompt,
            temperatures_for(temperature), arrived, arrived + limits.timeout_s, limits.max_audio_s,
            limits.snap,
        )  # fmt: skip
        try:
            result, extra = await self.backend.transcribe(request, http.is_disconnected)
        finally:
            path.unlink(missing_ok=True)
        if result.error:
            raise ApiError(400, f"could not transcribe the audio: {result.error}", "file", "invalid_audio")
        seconds = time.monotonic() - arrived
        self.metrics.latency.labels(model, task).observe(seconds)
        self.metrics.audio_seconds.labels(model).inc(result.duration)
        return render(response_format, result, extra | {"model": model, "latency_s": round(seconds, 3)})


LIMITS = Limits()


def _spool(upload: UploadFile) -> Path:
    """The upload as a named temporary file (the audio reader streams from a path), keeping its suffix."""
    suffix = Path(upload.filename or "").suffix[:10]
    with tempfile.NamedTemporaryFile(prefix="ctxprune-", suffix=suffix, delete=False) as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out)
    path = Path(out.name)
    if path.stat().st_size == 0:
        path.unlink()
        raise ApiError(400, "the uploaded file is empty", "file", "empty_file")
    return path


def create_app(backend, limits: Limits = LIMITS) -> FastAPI:
    """The FastAPI app over `backend` (`serve.local.LocalBackend` or `serve.ray_app.RayBackend`); the
    backend runs while the app does (its lifespan) and finishes what it accepted at shutdown."""
    server = Server(backend, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        yield
        server.stopping = True
        await asyncio.to_thread(backend.stop)

    app = FastAPI(
        title="ctxprune", summary="Context-aware pruned Whisper, OpenAI's audio API", lifespan=lifespan
    )
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=int(limits.max_upload_mb * 2**20), metrics=server.metrics)
    install_error_handlers(app)

    def audio_route(task: str):
        """One route per task, the same form (OpenAI's translations take no `language`: a hint here)."""

        async def route(
            http: Request,
            file: Annotated[UploadFile, File()],
            model: Annotated[str, Form()],
            language: Annotated[str | None, Form()] = None,
            prompt: Annotated[str, Form()] = "",
            response_format: Annotated[str, Form()] = "json",
            temperature: Annotated[float, Form()] = 0.0,
        ) -> Response:
            return await server.answer(
                http, task, file, model, language, prompt, response_format, temperature
            )

        return route

    app.post("/v1/audio/transcriptions", name="transcriptions")(audio_route("transcribe"))
    app.post("/v1/audio/translations", name="translations")(audio_route("translate"))

    @app.get("/v1/models")
    async def list_models() -> dict:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "ctxprune"} for n in backend.names]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "shutting down" if server.stopping else "ok"
        body = {"status": status, "queued": backend.depth(), "in_flight": backend.in_flight()}
        return JSONResponse(body, status_code=503 if server.stopping else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = server.metrics.export()
        return Response(body, media_type=content_type)

    @app.get("/info")
    async def info() -> dict:
        """What the web page offers: the models (their modules, whether their masks read the request's
        context), the languages, the limits."""
        served = [
            {"id": n, "reads_context": backend.reads_context(n), "modules": backend.modules(n)}
            for n in backend.names
        ]
        return {
            "models": served,
            "languages": LANGUAGES,
            "max_upload_mb": limits.max_upload_mb,
            "max_audio_s": limits.max_audio_s,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(PAGE / "index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in ("app.js", "style.css"):
            raise ApiError(404, f"no such file: {name}")
        return FileResponse(str(PAGE / name))

    return app
