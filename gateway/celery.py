import os
import sys

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _logging(loglevel=None, **_):
    """The workers and beat log as the settings say (LOGGING: plain or JSON, with task ids), not in Celery's
    own format: connecting this signal keeps Celery from configuring the root logger itself."""
    import logging
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
    # The level is LOG_LEVEL's (the settings'), unless the command line asks for one (`celery worker
    # --loglevel DEBUG`, `python -m gateway.worker scan -- -l DEBUG`): Celery passes its own default otherwise.
    if loglevel and any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in sys.argv):
        logging.getLogger().setLevel(loglevel)


@signals.task_prerun.connect
def _task_started(task_id=None, **_):
    from gateway.logs import task_started

    task_started(task_id)


@signals.task_postrun.connect
def _task_ended(**_):
    from gateway.logs import task_ended

    task_ended()


@signals.worker_init.connect
def _worker_started(**_):
    """The metrics files of this host's processes that no longer run are folded (docs/OPERATIONS.md)."""
    from gateway.metrics import multiprocess_dir_tidy

    multiprocess_dir_tidy()
