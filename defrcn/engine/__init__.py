"""The trainer core: runtime (device, msrun), TrainStep, the `Model.train` loop, the train and
eval drivers, the pre-flight checks and the tools' exit path.

`load_recipe` is re-exported here as the documented Python entry point."""
from defrcn.config.recipe import Recipe, load_recipe, save_config

__all__ = ["Recipe", "load_recipe", "save_config"]
