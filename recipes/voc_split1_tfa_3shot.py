"""VOC split 1 gFSOD fine-tuning (TFA-like): all 20 classes, 3 shots each.
Runs after voc_split1_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "tfa", shots=3, voc_split=1)
# configs/voc/defrcn_gfsod_r101_novelx_3shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 2000, [1600]
