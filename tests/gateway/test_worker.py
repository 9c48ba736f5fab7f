"""`python -m gateway.worker` as docs/OPERATIONS.md runs it: the queues it names, `all`, and a refusal of a
queue the gateway does not have."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.worker import command, queues_routed

REPO = Path(__file__).resolve().parents[2]


def test_the_gateway_routes_work_to_three_queues():
    assert queues_routed() == ["default", "scan", "webhooks"]


def test_a_queue_the_gateway_does_not_have_is_refused():
    with pytest.raises(SystemExit, match="unknown queue celery"):
        command(["celery"])


def test_all_starts_one_worker_on_every_queue(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "GATEWAY_STATE_DIR": str(tmp_path)}
    env.pop("CELERY_BROKER_URL", None)  # the filesystem broker under the temporary state directory
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway.worker", "all", "--", "--pool", "solo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "ready" not in output:
            line = worker.stdout.readline()
            if not line:
                break
            output += line
    finally:
        worker.terminate()
        rest = worker.communicate(timeout=30)[0]
    output += rest
    assert "ready" in output, output[-2000:]
    for queue in ("default", "scan", "webhooks"):
        assert f".> {queue}" in output, output[-2000:]
    assert "default-scan-webhooks@" in output  # the worker's name: its queues @ the host
