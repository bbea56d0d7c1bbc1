"""COCO FSOD fine-tuning (FSRW-like): the 20 novel classes, 30 shots each.
Runs after coco_base and `tools/surgery.py --method remove` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("coco", "fsod", shots=30)
# configs/coco/defrcn_fsod_r101_novel_30shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 4000, [3200]
