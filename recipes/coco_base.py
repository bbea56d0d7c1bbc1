"""COCO base training: the 60 base classes on trainvalno5k, ResNet-101 from ImageNet (MSRA)."""
from defrcn.recipes.common.base import base_cfg, callbacks, dataset, model, optimizer, rederive

cfg = base_cfg("coco")
# configs/coco/defrcn_det_r101_base.yaml
cfg.solver.max_iter, cfg.solver.steps = 110000, [85000, 100000]
