import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _logging(**_):
    """The workers and beat log as the settings say (LOGGING: plain or JSON, with task ids), not in Celery's
    own format: connecting this signal keeps Celery from configuring the root logger itself."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


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
    """The metrics files of this host's processes that no longer run go (docs/OPERATIONS.md)."""
    from gateway.metrics import multiprocess_dir_tidy

    multiprocess_dir_tidy()


@signals.worker_process_shutdown.connect
def _worker_process_ended(pid=None, **_):
    from gateway.metrics import process_dead

    process_dead(pid or os.getpid())
