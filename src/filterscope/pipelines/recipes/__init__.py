"""Bundled decoupling recipes: YAML configs of the measured runs, usable as ``--config NAME``.

Each ``NAME.yaml`` in this folder is one recipe (the folder is the single list of names); its
comments say what it reached, on what, and what the caller must add (weights, data, teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import UserInputError

RECIPES_DIR = Path(__file__).resolve().parent
RECIPES: tuple[str, ...] = tuple(sorted(path.stem for path in RECIPES_DIR.glob("*.yaml")))
SECTIONS = ("train", "decouple", "options")  # a config file may group its options under these


def recipe_path(name: str) -> Path:
    """The YAML file of the bundled recipe ``name``."""
    if name not in RECIPES:
        raise UserInputError(f"unknown decoupling recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES_DIR / f"{name}.yaml"


def config_file(path_or_recipe: str | None) -> str | Path | None:
    """``--config`` of ``filterscope decouple``: an existing file wins, then a bundled recipe's name;
    anything else is reported with both ways to fix it."""
    if path_or_recipe is None or Path(path_or_recipe).is_file():
        return path_or_recipe
    if path_or_recipe in RECIPES:
        return recipe_path(path_or_recipe)
    raise UserInputError(f"config {path_or_recipe!r} is neither a file nor a bundled recipe; give the path of a "
                         f"YAML file or one of {', '.join(RECIPES)}.")


def config_values(path_or_recipe: str | Path | None) -> dict[str, Any]:
    """The options of a ``--config`` file or bundled recipe as one flat dict (its train/decouple/options
    sections merged), under today's option names (:func:`upgrade_settings`: a file written for an
    earlier version loads, or is refused with one sentence)."""
    from ...core.config import read_yaml_config
    from ...methods.decoupling.legacy import upgrade_settings

    values: dict[str, Any] = {}
    for key, value in read_yaml_config(config_file(path_or_recipe)).items():
        if isinstance(value, dict) and key in SECTIONS:
            values.update(value)
        elif key != "verb":
            values[key] = value
    return upgrade_settings(values, source=f"config {str(path_or_recipe)!r}")


def load_recipe(name: str, **overrides):
    """The bundled recipe ``name`` as ``(TrainConfig, DecoupleConfig, DecouplingRunOptions)`` for
    :func:`filterscope.run_decoupling`; keyword arguments override its fields (``weights=``,
    ``data=``, ``teacher_weights=``, ``run_dir=`` ...), as flags do on the command line."""
    import argparse

    from ...core.config import resolve_configs
    from ...training.train import TrainConfig
    from ...methods.decoupling.config import DecoupleConfig
    from ..decoupling import DecouplingRunOptions

    return tuple(resolve_configs((TrainConfig, DecoupleConfig, DecouplingRunOptions), argparse.Namespace(**overrides),
                                 config_values(recipe_path(name))))
