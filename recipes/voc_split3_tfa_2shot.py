"""VOC split 3 gFSOD fine-tuning (TFA-like): all 20 classes, 2 shots each.
Runs after voc_split3_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "tfa", shots=2, voc_split=3)
# configs/voc/defrcn_gfsod_r101_novelx_2shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 1500, [1200]
