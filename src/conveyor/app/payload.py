"""How a handler's parameters map to Faktory ``args``, in both directions.

The mapping, which other languages rely on (see ``docs/python-api.md``):

* **model**: a handler whose only parameter is a typed model (dataclass, ``msgspec.Struct``,
  ``TypedDict``, pydantic model) takes ``args[0]``, a JSON object, decoded into that model.
  ``args`` has exactly one element.
* **positional**: otherwise ``args`` are the handler's positional parameters, in order; each
  annotated parameter is converted with ``msgspec.convert`` (so ``datetime`` arrives as a
  ``datetime``, not a string).
* **raw**: a handler declared with ``raw=True``, or whose only parameter is annotated as
  ``conveyor.Job``, receives the whole job and decodes nothing.

Validation happens on the worker side; a payload that does not fit raises ``PayloadError``,
which the worker sends to the dead set instead of retrying it pointlessly.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
from collections.abc import Callable
from typing import Any, is_typeddict

import msgspec

from conveyor.errors import PayloadError
from conveyor.job import Job

__all__ = ["PayloadError", "PayloadKind", "PayloadSpec"]


class PayloadKind(enum.Enum):
    POSITIONAL = "positional"
    MODEL = "model"
    RAW = "raw"


def _is_pydantic_model(tp: object) -> bool:
    # Only look when pydantic is already imported: a model class implies it was.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _is_model(tp: object) -> bool:
    if not isinstance(tp, type):
        return False
    return (
        dataclasses.is_dataclass(tp)
        or issubclass(tp, msgspec.Struct)
        or is_typeddict(tp)
        or _is_pydantic_model(tp)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Param:
    name: str
    annotation: Any  # inspect.Parameter.empty when not annotated
    required: bool


class PayloadSpec:
    """The args mapping of one handler, worked out once at declaration time."""

    def __init__(self, fn: Callable[..., Any], *, raw: bool = False) -> None:
        self.name = getattr(fn, "__qualname__", repr(fn))
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        hints = _parameter_types(fn, params, self.name)
        self.varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        positional = [
            p
            for p in params
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        self.params = tuple(
            _Param(p.name, hints.get(p.name, inspect.Parameter.empty), p.default is p.empty)
            for p in positional
        )
        only = self.params[0].annotation if len(self.params) == 1 and not self.varargs else None
        if raw or only is Job:
            self.kind = PayloadKind.RAW
        elif _is_model(only):
            self.kind = PayloadKind.MODEL
        else:
            self.kind = PayloadKind.POSITIONAL
        self.model: Any = only if self.kind is PayloadKind.MODEL else None
        self.required = sum(p.required for p in self.params)
        self.most = None if self.varargs else len(self.params)
        """The most args the handler takes (None: any number)."""

    # -- producer side -------------------------------------------------------------------------

    def encode(self, args: tuple[Any, ...]) -> list[Any]:
        """Turn a call's arguments into JSON-ready Faktory ``args``."""
        if self.kind is PayloadKind.RAW:
            return list(args)
        if self.kind is PayloadKind.MODEL:
            if len(args) != 1:
                raise TypeError(
                    f"{self.name} takes one {self.model.__name__}, got {len(args)} args"
                )
            (value,) = args
            if _is_pydantic_model(type(value)):
                return [value.model_dump(mode="json")]
            return [msgspec.to_builtins(value)]
        self._check_arity(len(args), TypeError)
        return list(msgspec.to_builtins(args))

    # -- worker side ---------------------------------------------------------------------------

    def decode(self, job: Job) -> tuple[Any, ...]:
        """The handler's arguments for ``job``; raises ``PayloadError`` when they do not fit."""
        if self.kind is PayloadKind.RAW:
            return (job,)
        args = job.args or []
        if self.kind is PayloadKind.MODEL:
            if len(args) != 1 or not isinstance(args[0], dict):
                raise PayloadError(
                    f"{job.jobtype}: args must be one JSON object for {self.model.__name__}, "
                    f"got {_describe(args)}"
                )
            return (self._convert_model(args[0]),)
        self._check_arity(len(args), PayloadError)
        return tuple(self._convert_arg(p, v) for p, v in zip(self.params, args, strict=False)) + (
            tuple(args[len(self.params) :])
        )

    def _convert_model(self, data: dict[str, Any]) -> Any:
        if _is_pydantic_model(self.model):
            pydantic = sys.modules["pydantic"]
            try:
                return self.model.model_validate(data)
            except pydantic.ValidationError as exc:
                raise PayloadError(f"invalid {self.model.__name__}: {exc}") from None
        try:
            return msgspec.convert(data, self.model, strict=False)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"invalid {self.model.__name__}: {exc}") from None

    def _convert_arg(self, param: _Param, value: Any) -> Any:
        if param.annotation is inspect.Parameter.empty or param.annotation is Any:
            return value
        try:
            return msgspec.convert(value, param.annotation, strict=False)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"argument {param.name!r}: {exc}") from None
        except TypeError:  # a type msgspec cannot check (a Protocol, a callable...): trust it
            return value

    def _check_arity(self, count: int, error: type[Exception]) -> None:
        required = self.required
        if count < required or (self.most is not None and count > self.most):
            expected = (
                str(required) if required == len(self.params) else f"{required}-{len(self.params)}"
            )
            raise error(f"{self.name} takes {expected} args, got {count}")


def _parameter_types(
    fn: Callable[..., Any], params: list[inspect.Parameter], name: str
) -> dict[str, Any]:
    """Each parameter's annotation as a type; string annotations are evaluated in the function's
    module (the return annotation is left alone: it does not matter here)."""
    namespace = getattr(fn, "__globals__", {})
    types: dict[str, Any] = {}
    for param in params:
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        try:
            types[param.name] = (
                eval(annotation, namespace) if isinstance(annotation, str) else annotation
            )
        except Exception as exc:
            if len(params) == 1:  # the only parameter decides: model or positional args
                raise TypeError(
                    f"cannot resolve the type of {name}'s parameter {param.name!r} "
                    f"({type(exc).__name__}: {exc}); define it at module level"
                ) from None
            # one of several: pass that argument through unconverted
    return types


def _describe(args: list[Any]) -> str:
    if len(args) != 1:
        return f"{len(args)} args"
    return f"a JSON {type(args[0]).__name__}"
