"""A real settings module: SQLite in $SHOP_DIR, conveyor at $CONVEYOR_URL."""

import os
from pathlib import Path

DATA = Path(os.environ["SHOP_DIR"])

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["conveyor.contrib.django", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA / "shop.db"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"url": os.environ["CONVEYOR_URL"], "retry": 2},
    },
}
