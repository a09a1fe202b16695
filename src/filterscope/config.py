"""Configuration dataclasses filled from defaults, then a YAML file, then command-line flags.

Flags are generated from the dataclass fields, so the dataclass is the single list of options.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserInputError

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """``int | None`` → int, ``list[int]`` → (list, int)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(arguments[0])
    if origin in (list, tuple):
        return (list, typing.get_args(annotation)[0])
    return annotation


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls``; flags not given stay absent from the namespace."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _base_type(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        help_text = f"(default: {default})"
        if kind is bool:
            parser.add_argument(
                _flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )
        elif isinstance(kind, tuple):
            parser.add_argument(
                _flag(field.name), dest=field.name, nargs="*", type=kind[1], default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(
                _flag(field.name), dest=field.name, type=kind if kind in (int, float) else str,
                default=argparse.SUPPRESS, help=help_text,
            )


def read_yaml_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file {str(path)!r} does not exist; check the --config path.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserInputError(f"config file {str(path)!r} is not valid YAML ({error.__class__.__name__}); fix its syntax.") from None
    if not isinstance(values, dict):
        raise UserInputError(f"config file {str(path)!r} must hold a mapping of option: value.")
    return values


def resolve_config(cls: type[T], namespace: argparse.Namespace, file_values: dict[str, Any] | None = None, **overrides) -> T:
    """Defaults ← YAML file ← flags ← overrides, with unknown keys reported."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict(file_values or {})
    values.pop("verb", None)
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserInputError(f"unknown option(s) {', '.join(unknown)} in the config file; known: {', '.join(sorted(names))}.")
    values.update({k: v for k, v in vars(namespace).items() if k in names})
    values.update(overrides)
    return cls(**values)
