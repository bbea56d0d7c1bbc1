"""Custom data set base training on any COCO-json set (the README's "Data" layout):
`--set data.root=ROOT --set data.novel_classes=a,b` (novel classes are held out)."""
from defrcn.recipes.common.base import base_cfg, callbacks, dataset, model, optimizer, rederive

cfg = base_cfg("custom")
# starting point: the VOC base schedule, configs/voc/defrcn_det_r101_base1.yaml; scale it to the data set
cfg.solver.max_iter, cfg.solver.steps = 15000, [10000, 13300]
