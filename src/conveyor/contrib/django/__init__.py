"""conveyor for Django: a ``django.tasks`` backend, and ``manage.py conveyor_worker``.

``settings.py``::

    INSTALLED_APPS = [..., "conveyor.contrib.django"]   # for the management command
    TASKS = {
        "default": {
            "BACKEND": "conveyor.contrib.django.ConveyorBackend",
            "QUEUES": ["default", "emails"],           # optional, as for any backend
            "OPTIONS": {"url": "tcp://localhost:7419", "retry": 5},
        }
    }

``@task`` functions are then pushed to conveyor by ``.enqueue()`` and run by
``python manage.py conveyor_worker`` (every ``conveyor worker`` option works there), or by
``conveyor worker conveyor.contrib.django.worker:app`` with ``DJANGO_SETTINGS_MODULE`` set.

Django 6 ships ``django.tasks``; on Django 5.2 (and Python 3.11) the ``django-tasks``
backport provides the same API, and this module uses whichever is installed. See
docs/python-api.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConveyorBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package as an app before settings are ready.
    if name == "ConveyorBackend":
        from conveyor.contrib.django.backend import ConveyorBackend

        return ConveyorBackend
    raise AttributeError(name)
