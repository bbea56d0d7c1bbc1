"""Toy base training on the synthetic shapes (`python tools/synthetic.py datasets/toy`):
ResNet-18 C4 from scratch, 256 x 256 images, a few minutes on a CPU."""
from defrcn.recipes.common.base import base_cfg, callbacks, dataset, model, optimizer, rederive

cfg = base_cfg("toy")
# Sized for `make demo` (<= 20 min on 2 cores, ~1 s/step): 200 steps already give bAP50 79
# on the synthetic test set (100 past 100 steps: 41); LR drop at 0.8 x.
TOY_BASE_ITERS = 300
cfg.solver.max_iter, cfg.solver.steps = TOY_BASE_ITERS, [TOY_BASE_ITERS * 4 // 5]
