"""The web dashboard (port 7420): Faktory's Web UI pages, a JSON API, ``/stats`` and
``/health``, built by ``create_app(manager)`` and served by ``start_web`` in the job server's
event loop. It calls the manager only, never the store."""

from conveyor.web.app import create_app
from conveyor.web.serve import WebHandle, start_web

__all__ = ["WebHandle", "create_app", "start_web"]
