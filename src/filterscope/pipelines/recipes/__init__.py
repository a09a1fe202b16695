"""Bundled decoupling configs: YAML files usable as ``--config NAME`` and by :func:`load_recipe`.

Each ``NAME.yaml`` in this folder is one (the folder is the single list of names); its comments say
where its settings come from and what the caller must add (weights, data, teacher). Two are not the
record of one run: ``default``, the settings ``filterscope decouple`` uses without ``--config`` (the
best measured recipe's, less what belongs to its network), and ``paper``, Li et al.'s settings as
written. The others are the measured recipes: what one run reached, on what.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import UserInputError

RECIPES_DIR = Path(__file__).resolve().parent
RECIPES: tuple[str, ...] = tuple(sorted(path.stem for path in RECIPES_DIR.glob("*.yaml")))
SECTIONS = ("train", "decouple", "options")  # a config file may group its options under these
DEFAULT_CONFIG = "default"  # what `filterscope decouple` uses when no --config is given
PAPER_CONFIG = "paper"  # the paper's settings (DecoupleConfig's dataclass defaults, Eq. 4 unstandardised)


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

    values = config_values_of(read_yaml_config(config_file(path_or_recipe)))
    return upgrade_settings(values, source=f"config {str(path_or_recipe)!r}")


def config_values_of(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a config mapping as one flat dict: its train/decouple/options sections merged."""
    values: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and key in SECTIONS:
            values.update(value)
        elif key != "verb":
            values[key] = value
    return values


def layered(*layers: dict[str, Any]) -> dict[str, Any]:
    """Flat option dicts merged in order, later ones winning. A layer that names a preset takes the
    values the preset sets (``PRESET_FIELDS``: λm, λk, λs, R) away from the layers before it, unless it
    sets them itself, so that its row of Table 5 applies: ``--preset vggnet`` over the defaults gives
    VGGNet's loss weights, not the defaults' ones."""
    from ...methods.decoupling.presets import PRESET_FIELDS

    merged: dict[str, Any] = {}
    for layer in layers:
        if layer.get("preset") is not None:
            for name in PRESET_FIELDS:
                if name not in layer:
                    merged.pop(name, None)
        merged.update(layer)
    return merged


def recorded_run_settings(run_dir: str | Path) -> dict[str, Any]:
    """What a resumed run of ``filterscope decouple`` without ``--config`` starts from: every option
    the run recorded (its ``decouple.yaml`` and ``config.yaml``, under today's names), and, for an
    option it did not record, the dataclass default. A run begun before the defaults were the bundled
    ``default`` config recorded every option it had, and one it did not have yet ran as its dataclass
    default says; so it goes on as it began, not under today's defaults. Where the run is and how this
    process runs it (``run_dir``, ``resume``, threads, device, ``compile``, ``progress``, ``log``) come
    from the command line as for a new run."""
    import dataclasses

    import yaml

    from ...methods.decoupling.config import DecoupleConfig
    from ...methods.decoupling.legacy import upgrade_settings
    from ...training.train import RUNTIME_ONLY_SETTINGS, TrainConfig
    from ..decoupling import DecouplingRunOptions

    recorded: dict[str, Any] = {}
    for name in ("config.yaml", "decouple.yaml"):
        try:
            values = yaml.safe_load((Path(run_dir) / name).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict):
            recorded.update(config_values_of(values))
    recorded = upgrade_settings(recorded, source=f"run {str(run_dir)!r}")
    not_carried = {*RUNTIME_ONLY_SETTINGS, "run_dir", "log"}
    settings = {}
    for cls in (TrainConfig, DecoupleConfig, DecouplingRunOptions):
        for f in dataclasses.fields(cls):
            if f.name not in not_carried:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                settings[f.name] = recorded.get(f.name, default)
    return settings


def load_recipe(name: str, **overrides):
    """The bundled recipe ``name`` as ``(TrainConfig, DecoupleConfig, DecouplingRunOptions)`` for
    :func:`filterscope.run_decoupling`; keyword arguments override its fields (``weights=``,
    ``data=``, ``teacher_weights=``, ``run_dir=`` ...), as flags do on the command line.
    ``load_recipe("default", model=..., data=...)`` gives what ``filterscope decouple`` uses without
    ``--config``, ``load_recipe("paper", ...)`` the paper's settings."""
    import argparse

    from ...core.config import resolve_configs
    from ...training.train import TrainConfig
    from ...methods.decoupling.config import DecoupleConfig
    from ..decoupling import DecouplingRunOptions

    from ...methods.decoupling.presets import PRESET_FIELDS

    values = layered(config_values(recipe_path(name)), {k: v for k, v in overrides.items() if k in ("preset", *PRESET_FIELDS)})
    return tuple(resolve_configs((TrainConfig, DecoupleConfig, DecouplingRunOptions), argparse.Namespace(**overrides), values))
