"""``python manage.py conveyor_worker [--backend ALIAS] [conveyor worker options]``."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

APP = "conveyor.contrib.django.worker:app"


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run a conveyor worker for this project's tasks. --backend ALIAS picks the TASKS "
        "entry (default: default); every other option is conveyor worker's (see --help)."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand the options to ``conveyor worker`` as they are: it parses them itself."""
        args = list(argv[2:])
        if "--backend" in args:
            at = args.index("--backend")
            if at + 1 >= len(args):
                self.stderr.write("--backend needs a TASKS alias")
                raise SystemExit(2)
            os.environ["CONVEYOR_DJANGO_BACKEND"] = args[at + 1]
            del args[at : at + 2]
        from conveyor.worker.cli import worker_command

        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        worker_command.main(args=[APP, *args], prog_name=prog)

    def handle(self, *args: Any, **options: Any) -> None:  # pragma: no cover - via call_command
        self.run_from_argv(["manage.py", "conveyor_worker", *args])
