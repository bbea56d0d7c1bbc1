"""VOC split 2 gFSOD fine-tuning (TFA-like): all 20 classes, 10 shots each.
Runs after voc_split2_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "tfa", shots=10, voc_split=2)
# configs/voc/defrcn_gfsod_r101_novelx_10shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 4000, [3200]
