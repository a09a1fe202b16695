"""Plugins: a Python file or module of yours that registers models or data sets for the CLI.

The CLI takes models and data sets by registered name. A plugin is imported before the CLI builds
its flags, so what it registers with ``@register_model`` / ``@register_dataset`` is a valid
``--model`` / ``--data`` value::

    # my_models.py
    from filterscope import register_model

    @register_model("mynet", input_shape=(3, 32, 32), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    def mynet(num_classes):
        return MyNet(num_classes)

    filterscope --plugin my_models.py decouple --model mynet --weights mynet.pt --data ...

Decoupled checkpoints of such a model record its name: the verbs that reload them
(``filterscope paths``, ``eval``) need the same ``--plugin``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ..core.errors import UserInputError

FLAG = "--plugin"
_LOADED: dict[str, ModuleType] = {}  # what was imported, by resolved path or module name: a plugin registers once


def split_plugin_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(plugins, the remaining arguments): every ``--plugin X`` / ``--plugin=X``, wherever it stands."""
    plugins, rest = [], []
    arguments = iter(argv)
    for argument in arguments:
        if argument == FLAG:
            value = next(arguments, None)
            if value is None:
                raise UserInputError(f"{FLAG} needs a value: a .py file or an importable module name.")
            plugins.append(value)
        elif argument.startswith(FLAG + "="):
            plugins.append(argument[len(FLAG) + 1:])
        else:
            rest.append(argument)
    return plugins, rest


def load_plugin(plugin: str) -> ModuleType:
    """Import ``plugin`` (a ``.py`` file or a module name) once; its registrations take effect."""
    is_file = plugin.endswith(".py") or Path(plugin).exists()
    key = str(Path(plugin).resolve()) if is_file else plugin
    if key not in _LOADED:
        _LOADED[key] = _import_file(Path(plugin)) if is_file else _import_module(plugin)
    return _LOADED[key]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserInputError(f"plugin file {str(path)!r} does not exist; pass the path of a .py file or a module name.")
    module_name = f"filterscope_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up here
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a plugin's own bug: named in one sentence, the traceback kept chained
        sys.modules.pop(module_name, None)
        raise UserInputError(f"plugin {str(path)!r} failed to import: {type(error).__name__}: {error}.") from error
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:  # the module exists but needs another that is missing
            raise UserInputError(f"plugin {name!r} failed to import: {error}; install what it needs.") from error
        raise UserInputError(f"plugin module {name!r} is not importable; pass a .py file or put the module on PYTHONPATH.") from error
    except Exception as error:
        raise UserInputError(f"plugin {name!r} failed to import: {type(error).__name__}: {error}.") from error
