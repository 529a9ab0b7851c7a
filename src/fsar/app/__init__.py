"""``fsar app``: a local web page around :class:`fsar.Recognizer` (FastAPI + a page of our own).

Why not Gradio: the page needs a handful of controls (actions, an upload, a webcam recording,
the verdict and the explanation picture), and what matters more is that it is easy to lock
down and to test: FastAPI + uvicorn are two small dependencies, every request goes through
code here (size and type limits, paths kept inside the working folder, errors turned into a
message), the page is one static file with no external script or font, and the tests drive it
with Starlette's test client and a real browser. Gradio would bring a large dependency tree, a
front end fetched from its own package and its own upload handling we could not limit as
precisely.

Safety rules (each tested):

* it binds to 127.0.0.1 unless ``--host`` says otherwise;
* an upload larger than ``max_upload_bytes`` is refused (413) before it is parsed, from its
  ``Content-Length`` (a request without one is refused, 411) and again while it is read;
* only video files (:data:`fsar.data.video.VIDEO_EXTENSIONS`) are accepted (415 otherwise), and a
  file that does not decode is reported on the page (400), never a stack trace;
* everything it writes lies under the working folder: uploaded names are reduced to a safe base
  name (no directory part, no ``..``), action names to one safe folder name, and a path in a
  request (``/api/support-folder``) must resolve inside the working folder (403 otherwise).

Layout of the working folder::

    actions/<action>/<clip>     uploaded support clips (and the demo's synthetic set)
    queries/<sha256>.<ext>      uploaded queries (named by content)
    explanations/<id>.png       explanation pictures served by /explanations/<id>.png
    cache/                      the recogniser's clip store (encoded clips)
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time

import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["AppState", "create_app", "safe_name"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 64
_SAFE = re.compile(r"[^A-Za-z0-9 ._()+,-]")
_EXPLANATION_ID = re.compile(r"^[0-9a-f]{32}$")


class AppError(Exception):
    """A message for the page, with the HTTP status to send it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def safe_name(text: str, *, what: str) -> str:
    """One path component from user text: no directory part, no leading dots, safe characters."""
    base = str(text).replace("\\", "/").split("/")[-1]
    base = _SAFE.sub("_", base).strip(" .")
    if not base or base in (".", ".."):
        raise AppError(f"{what} {text!r} is not a usable name")
    return base[:120]


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, if it lies inside ``root``; else :class:`AppError` (403)."""
    resolved = (root / path).resolve() if not path.is_absolute() else path.resolve()
    root = root.resolve()
    if resolved != root and root not in resolved.parents:
        raise AppError(f"{path} is outside the working folder {root}", status=403)
    return resolved


class AppState:
    """The recogniser and the working folder behind the page (one lock: one request at a time)."""

    def __init__(self, recognizer, workdir: str | os.PathLike, *, max_upload_bytes: int,
                 demo_classes: int = 5) -> None:
        from fsar.data.video import VIDEO_EXTENSIONS

        self.recognizer = recognizer
        self.workdir = Path(workdir).resolve()
        for sub in ("actions", "queries", "explanations"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = int(max_upload_bytes)
        self.extensions = VIDEO_EXTENSIONS
        self.demo_classes = demo_classes
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- helpers

    def check_type(self, filename: str) -> str:
        suffix = Path(filename or "").suffix.lower()
        if suffix not in self.extensions:
            raise AppError(
                f"{filename!r}: unsupported file type {suffix or '(none)'}; upload a video "
                f"({', '.join(self.extensions)})", status=415,
            )
        return suffix

    def save_upload(self, upload, directory: Path, name: str) -> Path:
        """Copy an upload into ``directory/name`` (inside the working folder), counting bytes."""
        target = inside(self.workdir, directory / name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
        size = 0
        try:
            with open(tmp, "wb") as out:
                while block := upload.file.read(1 << 20):
                    size += len(block)
                    if size > self.max_upload_bytes:
                        raise AppError(f"{upload.filename!r} is larger than the upload limit of "
                                       f"{self.max_upload_bytes // (1 << 20)} MB", status=413)
                    out.write(block)
            if size == 0:
                raise AppError(f"{upload.filename!r} is empty")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def state(self) -> dict[str, Any]:
        recognizer = self.recognizer
        info = dict(recognizer.info)
        calibration = None
        threshold = None
        if len(recognizer.actions) >= 2:
            try:
                cal = recognizer.calibration()
                calibration = {"temperature": cal.temperature, "threshold": cal.threshold, "rule": cal.rule,
                               "leave_one_out_accuracy": cal.leave_one_out_accuracy}
                threshold = recognizer.threshold()
            except Exception as error:  # noqa: BLE001 - reported on the page
                calibration = {"error": str(error)}
        return {
            "method": info.get("method"), "backbone": info.get("backbone"), "checkpoint": info.get("checkpoint"),
            "actions": recognizer.shots(), "reject": recognizer.reject, "threshold": threshold,
            "calibration": calibration, "max_upload_mb": self.max_upload_bytes / (1 << 20),
            "extensions": list(self.extensions),
        }

    # ---------------------------------------------------------------- actions

    def add_action(self, name: str, uploads: list) -> dict[str, Any]:
        from fsar.recognizer import RecognizerError

        action = safe_name((name or "").strip(), what="action name")
        if not uploads:
            raise AppError(f"action {action!r}: choose at least one clip")
        folder = self.workdir / "actions" / action
        saved = []
        try:
            for upload in uploads:
                suffix = self.check_type(upload.filename)
                stem = safe_name(Path(upload.filename).stem, what="file name")
                saved.append(self.save_upload(upload, folder, f"{stem}{suffix}"))
            self.recognizer.add(action, saved)
        except (AppError, RecognizerError):
            for path in saved:
                path.unlink(missing_ok=True)
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
            raise
        return self.state()

    def add_folder_upload(self, uploads: list) -> dict[str, Any]:
        """Files picked as a folder: their names are ``<root>/<action>/<clip>`` (the browser's
        relative paths); one action per sub-folder."""
        groups: dict[str, list] = {}
        for upload in uploads:
            parts = [p for p in str(upload.filename).replace("\\", "/").split("/") if p]
            if len(parts) < 2:
                raise AppError(f"{upload.filename!r}: expected <folder>/<action>/<clip> (pick the folder of actions)")
            groups.setdefault(parts[-2], []).append(upload)
        if not groups:
            raise AppError("the folder holds no clips")
        for action, files in groups.items():
            self.add_action(action, files)
        return self.state()

    def remove_action(self, name: str) -> dict[str, Any]:
        from fsar.recognizer import RecognizerError

        try:
            self.recognizer.remove(name)
        except RecognizerError as error:
            raise AppError(str(error), status=404) from None
        return self.state()

    def load_folder(self, path: str) -> dict[str, Any]:
        """Load ``path/<action>/<clip>`` (inside the working folder) as the support set."""
        from fsar.recognizer import support_folder

        folder = inside(self.workdir, Path(path))
        support = support_folder(folder)
        for name in list(self.recognizer.actions):
            self.recognizer.remove(name)
        for name, clips in support.items():
            self.recognizer.add(name, clips)
        return self.state()

    def load_demo(self) -> dict[str, Any]:
        """The demo's synthetic actions (a few classes, 3 clips each) as the support set."""
        from fsar.data.synth import class_names, render_dataset

        names = class_names()[: self.demo_classes]
        root = render_dataset(self.workdir / "demo-data", classes=names, videos_per_class=4, frames=16, size=96,
                              progress=False)
        support = self.workdir / "actions-demo"
        for name in names:
            clips = sorted((root / name).glob("*.mp4"))
            (support / name).mkdir(parents=True, exist_ok=True)
            for clip in clips[:3]:
                if not (support / name / clip.name).exists():
                    shutil.copy(clip, support / name / clip.name)
        return self.load_folder(str(support.relative_to(self.workdir)))

    def set_reject(self, value: str) -> dict[str, Any]:
        from fsar.recognizer import parse_reject

        self.recognizer.reject = parse_reject(value)
        return self.state()

    # ---------------------------------------------------------------- prediction

    def predict(self, upload) -> dict[str, Any]:
        suffix = self.check_type(upload.filename)
        if len(self.recognizer.actions) < 2:
            raise AppError(f"add at least 2 actions first (there {'is' if len(self.recognizer.actions) == 1 else 'are'} "
                           f"{len(self.recognizer.actions)})")
        tmp = self.save_upload(upload, self.workdir / "queries", f"upload-{uuid.uuid4().hex}{suffix}")
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        path = tmp.with_name(f"{digest}{suffix}")
        os.replace(tmp, path)
        display = safe_name(Path(upload.filename).name, what="file name")
        explanation = self.recognizer.explain(path, top=min(3, len(self.recognizer.actions)), name=display)
        picture = uuid.uuid4().hex
        explanation.save(self.workdir / "explanations" / f"{picture}.png")
        result = explanation.prediction.to_dict()
        return {"prediction": result, "explanation": f"/explanations/{picture}.png",
                "matches": [{"class": m.name, "support_clip": m.support_path.name, "texts": m.texts}
                            for m in explanation.matches], "state": self.state()}

    def explanation_path(self, name: str) -> Path:
        stem = name[:-4] if name.endswith(".png") else None
        if stem is None or not _EXPLANATION_ID.match(stem):
            raise AppError(f"no explanation {name!r}", status=404)
        path = inside(self.workdir, Path("explanations") / name)
        if not path.is_file():
            raise AppError(f"no explanation {name!r}", status=404)
        return path


class _BodyLimit:
    """ASGI middleware: refuse request bodies over the limit (413) or without a length (411)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        limit = self.max_bytes + (1 << 20)  # the multipart framing around the file
        problem = None
        if length is None:
            problem = (411, "uploads must declare their size (Content-Length)")
        else:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                problem = (400, "bad Content-Length")
            elif declared > limit:
                problem = (413, f"upload of {declared / (1 << 20):.1f} MB is larger than the limit of "
                                f"{self.max_bytes / (1 << 20):.0f} MB")
        if problem is not None:
            return await _send_json(send, problem[0], {"error": problem[1]})
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # more than declared: stop reading
                    return {"type": "http.disconnect"}
            return message

        return await self.app(scope, counted, send)


async def _send_json(send, status: int, payload: dict) -> None:
    import json

    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(state: AppState):
    """The FastAPI application serving the page and its JSON API over ``state``."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from fsar.recognizer import RecognizerError

    app = FastAPI(title="fsar", docs_url=None, redoc_url=None, openapi_url=None)
    page = (Path(__file__).with_name("page.html")).read_text(encoding="utf-8")

    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def missing_field(request: Request, error: RequestValidationError):
        fields = sorted({str(e.get("loc", ["", "?"])[-1]) for e in error.errors()})
        what = {"files": "choose at least one clip", "file": "choose a query clip", "name": "give the action a name",
                "path": "give a folder", "value": "give a value"}
        return JSONResponse({"error": "; ".join(what.get(f, f"missing {f}") for f in fields)}, status_code=400)

    @app.exception_handler(RecognizerError)
    async def recognizer_error(request: Request, error: RecognizerError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):  # a message, never a stack trace
        log.exception("fsar app: %s failed", request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log"},
                            status_code=500)

    def locked(function, *args):
        with state.lock:
            return function(*args)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                           "media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'; "
                                           "script-src 'self' 'unsafe-inline'"})

    @app.get("/api/state")
    def get_state():
        return locked(state.state)

    @app.post("/api/actions")
    def add_action(name: str = Form(...), files: list[UploadFile] = File(...)):
        return locked(state.add_action, name, files)

    @app.post("/api/actions-folder")
    def add_folder(files: list[UploadFile] = File(...)):
        return locked(state.add_folder_upload, files)

    @app.delete("/api/actions/{name}")
    def remove_action(name: str):
        return locked(state.remove_action, name)

    @app.post("/api/support-folder")
    def support_folder(path: str = Form(...)):
        return locked(state.load_folder, path)

    @app.post("/api/demo")
    def demo():
        return locked(state.load_demo)

    @app.post("/api/reject")
    def reject(value: str = Form(...)):
        return locked(state.set_reject, value)

    @app.post("/api/predict")
    def predict(file: UploadFile = File(...)):
        return locked(state.predict, file)

    @app.get("/explanations/{name}")
    def explanation(name: str):
        return FileResponse(state.explanation_path(name), media_type="image/png")

    return _BodyLimit(app, state.max_upload_bytes)
