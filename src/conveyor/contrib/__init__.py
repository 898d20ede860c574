"""Integrations with other software, each behind its own optional extra:

* ``conveyor.contrib.otel`` -- OpenTelemetry spans and trace context (``conveyor-jobs[otel]``);
* ``conveyor.contrib.django`` -- a ``django.tasks`` backend and worker (``[django]``);
* ``conveyor.contrib.starlette`` -- a lifespan for Starlette and FastAPI apps (``[fastapi]``).

Nothing in the rest of conveyor imports these modules.
"""
