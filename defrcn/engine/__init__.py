"""Recipe loading, device setup and the train/eval drivers shared by tools/."""

from defrcn.engine.recipe import Recipe, load_recipe, save_config  # noqa: E402,F401

__all__ = ["Recipe", "load_recipe", "save_config"]
