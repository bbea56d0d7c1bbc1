"""VOC split 3 gFSOD fine-tuning (TFA-like): all 20 classes, 1 shot each.
Runs after voc_split3_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "tfa", shots=1, voc_split=3)
# configs/voc/defrcn_gfsod_r101_novelx_1shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 1000, [800]
