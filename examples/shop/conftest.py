"""In your own project, put ``pytest_plugins = ["conveyor.testing"]`` in the top-level
``conftest.py``; here (not the top level of this repository) the fixture is imported instead."""

from conveyor.testing import conveyor_server

__all__ = ["conveyor_server"]
