"""Request ids and structured logs.

Every request gets an id: the `X-Request-ID` its proxy sent (when it is a plain token of at most 64
characters), or a new one. It is answered in the response's `X-Request-ID` and carried by every log record
made while the request runs, so one request's lines can be found together, across the proxy's log and
ours. A Celery task's records carry its task id the same way. With GATEWAY_LOG_FORMAT=json each record is
one JSON object on one line.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

request_id: ContextVar[str] = ContextVar("request_id", default="-")
_ACCEPTED = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
HEADER = "X-Request-ID"


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.headers.get(HEADER, "")
        rid = sent if _ACCEPTED.fullmatch(sent) else uuid.uuid4().hex
        request.request_id = rid
        # Not reset when the view returns: Django logs a failed request's response ("Bad Request: ...")
        # after the middleware is done, and that line carries the id too. The next request on this thread
        # sets its own.
        request_id.set(rid)
        response = self.get_response(request)
        response[HEADER] = rid
        return response


class RequestIdFilter(logging.Filter):
    """Puts the current request's (or task's) id on every record as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id, and the
    exception's traceback when there is one. Newlines inside a message stay inside its string."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def task_started(task_id: str | None = None, **_) -> None:
    """Celery's task_prerun: the task's records carry its id."""
    request_id.set(task_id or "-")


def task_ended(**_) -> None:
    request_id.set("-")
