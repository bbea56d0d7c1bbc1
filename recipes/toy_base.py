"""Toy base training on the synthetic shapes (`python tools/synthetic.py datasets/toy`):
ResNet-18 C4 from scratch, 256 x 256 images, a few minutes on a CPU."""
from defrcn.recipes.common.base import base_cfg, callbacks, dataset, model, optimizer

cfg = base_cfg("toy")
TOY_BASE_ITERS = 200  # sized for a few CPU minutes (to tune); LR drop at 0.8 x
cfg.solver.max_iter, cfg.solver.steps = TOY_BASE_ITERS, [TOY_BASE_ITERS * 4 // 5]
