"""FastAPI is Starlette: ``conveyor_lifespan`` is ``conveyor.contrib.starlette``'s."""

from conveyor.contrib.starlette import conveyor_lifespan

__all__ = ["conveyor_lifespan"]
