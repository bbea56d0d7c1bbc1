"""VOC split 1 base training: the 15 base classes on VOC07+12 trainval."""
from defrcn.recipes.common.base import base_cfg, callbacks, dataset, model, optimizer, rederive

cfg = base_cfg("voc", voc_split=1)
# configs/voc/defrcn_det_r101_base1.yaml
cfg.solver.max_iter, cfg.solver.steps = 15000, [10000, 13300]
