"""Request ids and JSON logs as the settings configure them (the real LOGGING handler and formatter)."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

from gateway.celery import app
from gateway.logs import JsonFormatter, RequestIdFilter, request_id


@pytest.fixture
def captured():
    """The settings' console handler (its filter and formatter), writing to a buffer, in JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_sent_request_id_is_kept_and_answered(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.42")
    assert response["X-Request-ID"] == "lb-7f3a.42"


@pytest.mark.parametrize("sent", ["", "has space", "a" * 65, "new\nline", "ünï"])
def test_an_unusable_request_id_is_replaced(client, sent):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=sent)
    assert response["X-Request-ID"] != sent
    assert len(response["X-Request-ID"]) == 32 and int(response["X-Request-ID"], 16) >= 0


@pytest.mark.django_db
def test_a_failed_request_logs_one_json_line_with_its_id(client, captured):
    response = client.get("/api/v1/payment-intents", HTTP_X_REQUEST_ID="req-1")
    assert response.status_code == 401
    (entry,) = lines(captured)
    assert entry["request_id"] == "req-1"
    assert entry["level"] == "WARNING" and entry["logger"] == "django.request"
    assert "Unauthorized" in entry["message"]
    assert entry["time"].endswith("+00:00")


def test_exceptions_and_newlines_stay_inside_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    token = request_id.set("r-9")
    try:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed:\n%s", "two lines")
    finally:
        request_id.reset(token)
        logger.removeHandler(handler)
    (entry,) = lines(stream)
    assert entry["message"] == "failed:\ntwo lines" and entry["request_id"] == "r-9"
    assert "ValueError: bad\nthing" in entry["exception"]


def test_settings_choose_the_format():
    assert settings.LOGGING["handlers"]["console"]["formatter"] == settings.GATEWAY_LOG_FORMAT
    config = json.loads(json.dumps(settings.LOGGING))
    config["handlers"]["console"]["formatter"] = "json"
    logging.config.dictConfig(config)  # the json formatter and the filter load by their dotted paths
    try:
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, RequestIdFilter) for f in handler.filters)
    finally:
        logging.config.dictConfig(settings.LOGGING)


def test_a_celery_task_logs_with_its_task_id():
    seen = []

    @app.task(name="tests.gateway.request_id_probe")
    def probe():
        seen.append(request_id.get())

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        result = probe.apply_async(task_id="task-abc")
    finally:
        app.conf.task_always_eager = before
    assert result.successful() and seen == ["task-abc"]
    assert request_id.get() == "-"
