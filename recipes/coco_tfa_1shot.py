"""COCO gFSOD fine-tuning (TFA-like): all 80 classes, 1 shot each.
Runs after coco_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("coco", "tfa", shots=1)
# configs/coco/defrcn_gfsod_r101_novel_1shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 3200, [2560]
