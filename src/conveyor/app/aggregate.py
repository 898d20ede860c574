"""Aggregated jobs on the Python side: ``conveyor.Aggregate`` and how a handler receives a list.

A job declared ``@app.job(aggregate=Aggregate(...))`` is pushed one item at a time, each with
``options(group=...)``; the server keeps them in the group's aggregating set and enqueues one
job when the group is due, whose ``args`` is one array holding each member's ``args``
(docs/aggregation.md). The handler takes one parameter, ``list[T]``, and gets the items::

    @app.job(aggregate=conveyor.Aggregate(max_size=100, max_delay=10, grace=2))
    async def send_digest(emails: list[Email]) -> None: ...

    await send_digest.options(group="user-42").push(Email(...))

Each member's one argument is converted to ``T`` (a member with another number of args gives
its whole ``args`` array). A member run on its own -- pushed to a server without aggregation
(plain Faktory), or run inline in tests -- reaches the handler as a list of one item.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from conveyor.errors import PayloadError
from conveyor.job import Job

if typing.TYPE_CHECKING:
    from conveyor.app.payload import PayloadSpec

__all__ = ["Aggregate", "AggregatePayload"]

MAX_SIZE = 10_000
MAX_SECONDS = 86_400.0


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregate:
    """When the server enqueues a group of jobs as one: at ``max_size`` jobs, ``max_delay``
    seconds after the oldest arrived, or ``grace`` seconds after the newest, whichever comes
    first."""

    max_size: int = 100
    max_delay: float = 60.0
    grace: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not 1 <= self.max_size <= MAX_SIZE:
            raise ValueError(f"max_size must be from 1 to {MAX_SIZE}, got {self.max_size!r}")
        for name in ("max_delay", "grace"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
                raise ValueError(f"{name} must be above 0 and at most {MAX_SECONDS:g} seconds")

    def to_custom(self) -> dict[str, Any]:
        """``custom.aggregate`` as the server reads it."""
        return {"max_size": self.max_size, "max_delay": self.max_delay, "grace": self.grace}


def _item_type(fn: Callable[..., Any], name: str) -> Any:
    """``T`` of the handler's one parameter ``list[T]`` (``Any`` when not annotated)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 1:
        raise TypeError(
            f"{name}: an aggregated job's handler takes one parameter, the list of items "
            f"(e.g. items: list[Email]); it has {len(params)}"
        )
    hints = typing.get_type_hints(fn) if params[0].annotation is not params[0].empty else {}
    annotation = hints.get(params[0].name, Any)
    if annotation is Any:
        return Any
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is None or len(args) != 1 or not issubclass(origin, (list, tuple, set)):
        if origin is None and annotation in (list, tuple):
            return Any
        raise TypeError(f"{name}: annotate the handler's parameter as list[T], not {annotation}")
    return args[0]


def _is_pydantic(tp: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


class AggregatePayload:
    """The args mapping of an aggregated job: one item in per member, a list out."""

    def __init__(self, fn: Callable[..., Any], spec: PayloadSpec) -> None:
        self.spec = spec  # the raw mapping (``raw=True`` or a ``Job`` parameter) still applies
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.item: Any = Any if spec.kind.value == "raw" else _item_type(fn, self.name)

    def encode(self, args: tuple[Any, ...]) -> list[Any]:
        """One member's ``args``: its item."""
        if len(args) != 1:
            raise TypeError(f"{self.name} is pushed one item at a time, got {len(args)} args")
        (item,) = args
        if _is_pydantic(type(item)):
            return [item.model_dump(mode="json")]
        return [msgspec.to_builtins(item)]

    def decode(self, job: Job) -> tuple[Any, ...]:
        """The handler's one argument: the list of the members' items."""
        if self.spec.kind.value == "raw":
            return (job,)
        args = job.args or []
        if job.custom and "aggregated" in job.custom:
            if len(args) != 1 or not isinstance(args[0], list):
                raise PayloadError(f"{job.jobtype}: an aggregated job's args is one array")
            members = args[0]
        else:  # one member run on its own (no aggregation on the way)
            members = [args]
        return ([self._convert(member) for member in members],)

    def _convert(self, member: Any) -> Any:
        value = member[0] if isinstance(member, list) and len(member) == 1 else member
        if self.item is Any:
            return value
        if _is_pydantic(self.item):
            pydantic = sys.modules["pydantic"]
            try:
                return self.item.model_validate(value)
            except pydantic.ValidationError as exc:
                raise PayloadError(f"invalid {self.item.__name__}: {exc}") from None
        try:
            return msgspec.convert(value, self.item, strict=False)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"an item of {self.name}: {exc}") from None
