"""The training jobs, by name: ``cfg.job`` picks a recipe builder from :data:`RECIPES`.

A builder is ``build(cfg, accelerator, **kwargs) -> davi.training.recipe.Recipe``; the loop in
``davi.training.loop`` runs whatever it returns. A new job is a module here (or anywhere) and one
:func:`register_recipe` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from davi.config import Config, ConfigError
from davi.training.recipe import Recipe
from davi.training.recipes.davi import davi_recipe
from davi.training.recipes.prior import prior_recipe
from davi.training.recipes.unpaired import unpaired_recipe

RecipeBuilder = Callable[..., Recipe]

RECIPES: dict[str, RecipeBuilder] = {"prior": prior_recipe, "davi": davi_recipe, "unpaired": unpaired_recipe}


def register_recipe(name: str, build: RecipeBuilder) -> None:
    RECIPES[name] = build


def get_recipe(job: str) -> RecipeBuilder:
    if job not in RECIPES:
        raise ConfigError(f"job: {job!r} is not one of {', '.join(RECIPES)}")
    return RECIPES[job]


def train_job(cfg: Config, resume: str | None = None, **kwargs) -> Path:
    """Look ``cfg.job`` up and hand its recipe to the training loop (what train.py does)."""
    from davi.training.loop import train

    return train(cfg, get_recipe(cfg.job), resume=resume, **kwargs)
