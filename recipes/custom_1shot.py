"""Custom data set fine-tuning (gFSOD): all classes, 1 shot each, on any COCO-json set.
Runs after custom_base and `tools/surgery.py --method randinit`; pass the same
`--set data.root=ROOT --set data.novel_classes=a,b` as the base run."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("custom", "tfa", shots=1)
# starting point: VOC gFSOD 1-shot, configs/voc/defrcn_gfsod_r101_novelx_1shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 1000, [800]
