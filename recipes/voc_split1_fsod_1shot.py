"""VOC split 1 FSOD fine-tuning: the 5 novel classes, 1 shot each.
Runs after voc_split1_base and `tools/surgery.py --method remove` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("voc", "fsod", shots=1, voc_split=1)
# configs/voc/defrcn_fsod_r101_novelx_1shot_seedx.yaml
cfg.solver.max_iter, cfg.solver.steps = 800, [640]
