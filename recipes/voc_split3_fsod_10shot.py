"""VOC split 3 FSOD fine-tuning: the 5 novel classes, 10 shots each.
Runs after voc_split3_base and `tools/surgery.py --method remove` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "fsod", shots=10, voc_split=3)
# configs/voc/defrcn_fsod_r101_novelx_10shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 4000, [3200]
