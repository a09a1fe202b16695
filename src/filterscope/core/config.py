"""Configuration dataclasses filled from defaults, then a YAML file, then command-line flags.

Flags are generated from the dataclass fields, so the dataclass is the single list of options.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
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


def check_choices(config: Any) -> None:
    """Raise one clear error for a field whose value is not among its ``metadata["choices"]``.

    The choices are declared once, on the dataclass field; the CLI lists them (see
    :func:`add_dataclass_arguments`) and this checks them for callers of the Python API.
    """
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if choices is not None and value not in choices:
            raise UserInputError(f"unknown {field.name.replace('_', ' ')} {value!r}; choose one of {', '.join(choices)}.")


_DOC_ENTRY = re.compile(r"^(\s+)([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): (.*)$")


def field_descriptions(cls: type) -> dict[str, str]:
    """Each field's description from the class docstring's ``Args:`` / ``Attributes:`` entries
    (``name: text``, or ``a, b: text`` for several, continued on deeper-indented lines), so the
    docstring stays the one place a field is explained and ``--help`` shows the same words."""
    descriptions: dict[str, str] = {}
    names: list[str] = []
    entry_indent = None
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        match = _DOC_ENTRY.match(line)
        indent = len(line) - len(line.lstrip())
        if match and (entry_indent is None or len(match.group(1)) == entry_indent):
            entry_indent = len(match.group(1))
            names = match.group(2).split(", ")
            for name in names:
                descriptions[name] = match.group(3).strip()
        elif names and line.strip() and entry_indent is not None and indent > entry_indent:
            for name in names:
                descriptions[name] += " " + line.strip()
        else:
            names = []
    return descriptions


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                            defaults: dict[str, Any] | None = None) -> None:
    """Add one flag per field of ``cls``, explained as its docstring explains the field; flags not
    given stay absent from the namespace. ``defaults`` are the values the help shows where the verb
    starts from other values than the dataclass's (``filterscope decouple``'s bundled ``default`` config)."""
    hints = typing.get_type_hints(cls)
    descriptions = field_descriptions(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _base_type(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        default = (defaults or {}).get(field.name, default)
        description = descriptions.get(field.name, "").replace("%", "%%")  # argparse formats help with %
        help_text = f"{description} (default: {default})".lstrip()
        if kind is bool:
            parser.add_argument(
                _flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )
        elif isinstance(kind, tuple):
            parser.add_argument(
                _flag(field.name), dest=field.name, nargs="*", type=kind[1], default=argparse.SUPPRESS, help=help_text
            )
        else:  # a field's metadata may name its allowed values: field(..., metadata={"choices": NAMES})
            parser.add_argument(
                _flag(field.name), dest=field.name, type=kind if kind in (int, float) else str,
                choices=field.metadata.get("choices"), default=argparse.SUPPRESS, help=help_text,
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


def resolve_config(cls: type[T], namespace: argparse.Namespace, file_values: dict[str, Any] | None = None) -> T:
    """Defaults ← YAML file ← flags, with unknown keys reported."""
    return resolve_configs((cls,), namespace, file_values)[0]


def resolve_configs(classes: tuple[type, ...], namespace: argparse.Namespace, file_values: dict[str, Any] | None = None) -> list:
    """Like :func:`resolve_config` for several dataclasses sharing one flag set and one YAML file.

    A YAML file may hold the fields flat or under one section per class (``train:``, ``decouple:``,
    ``options:``); every key must belong to one of the classes.
    """
    values = dict(file_values or {})
    values.pop("verb", None)
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in ("train", "decouple", "options"):
            flat.update(value)
        else:
            flat[key] = value
    known = set().union(*({f.name for f in dataclasses.fields(cls)} for cls in classes))
    unknown = sorted(set(flat) - known)
    if unknown:
        raise UserInputError(f"unknown option(s) {', '.join(unknown)} in the config file; known: {', '.join(sorted(known))}.")
    resolved = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in flat.items() if k in names}
        own.update({k: v for k, v in vars(namespace).items() if k in names})
        resolved.append(cls(**own))
    return resolved
