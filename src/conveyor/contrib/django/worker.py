"""``conveyor worker conveyor.contrib.django.worker:app``: the tasks of a Django project.

Sets Django up from ``DJANGO_SETTINGS_MODULE`` (a no-op under ``manage.py``) and serves the
``ConveyorBackend`` named by ``CONVEYOR_DJANGO_BACKEND`` (default ``"default"``).
"""

from __future__ import annotations

import os

import django

django.setup()

from conveyor.contrib.django.runner import DjangoTasksApp  # noqa: E402 - after setup()

__all__ = ["BACKEND_ENV", "app"]

BACKEND_ENV = "CONVEYOR_DJANGO_BACKEND"

app = DjangoTasksApp(os.environ.get(BACKEND_ENV, "default"))
