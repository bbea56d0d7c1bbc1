"""Custom data set fine-tuning (gFSOD): all classes, 3 shots each, on any COCO-json set.
Runs after custom_base and `tools/surgery.py --method randinit`; pass the same
`--set data.root=ROOT --set data.novel_classes=a,b` as the base run."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("custom", "tfa", shots=3)
# starting point: VOC gFSOD 3-shot, configs/voc/defrcn_gfsod_r101_novelx_3shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 2000, [1600]
