"""Configuration as code: the `Config` settings object, typed `--set` overrides, recipe
loading (a Python file or a run's `config.json`) and the saved `config.json`."""
from defrcn.config.config import Config, apply_overrides
from defrcn.config.recipe import Recipe, load_recipe, save_config

__all__ = ["Config", "apply_overrides", "Recipe", "load_recipe", "save_config"]
