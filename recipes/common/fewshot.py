"""Fine-tuning settings: `fewshot_cfg(benchmark, setting, shots, voc_split=0)` -> a new Config.

Starts from `base_cfg` and applies DeFRCN's fine-tune deltas
(`configs/{coco,voc}/defrcn_{fsod,gfsod}_r101_novel*_{K}shot_seedx.yaml`):
GDL lambda_roi 0.01 (COCO) / 0.001 (VOC, the repo's value; the paper used 0.01), res5
frozen (FREEZE_FEAT), classifier dropout 0.8, LR 0.01 without warmup, PCB on.
Settings: "fsod" (FSRW-like: novel classes only, predictor re-created: surgery `remove`)
and "tfa" (TFA-like gFSOD: all classes, K shots each, predictor grown: surgery `randinit`).
The schedule (max_iter, and steps at 0.8 x max_iter) is stated by each leaf.

`model.base_weights` is the surgery output of the matching base run, named after the
original's files: `output/<base recipe>/model_reset_surgery.ckpt` (randinit) or
`model_reset_remove.ckpt` (remove), written by
`tools/surgery.py --checkpoint output/<base recipe>/model_final.ckpt --method ... --output ...`.
"""
from defrcn.recipes.common.base import base_cfg
from defrcn.recipes.common.builders import callbacks, data_spec, dataset, model, optimizer
from defrcn.recipes.common.derive import SURGERY_OF_SETTING, base_weights_path, rederive

__all__ = ["fewshot_cfg", "model", "dataset", "optimizer", "callbacks", "data_spec", "rederive"]

GDL_SCALE_ROI_FINETUNE = {"coco": 0.01, "voc": 0.001, "custom": 0.01, "toy": 0.01}  # ROI_HEADS.BACKWARD_SCALE


def fewshot_cfg(benchmark, setting, shots, voc_split=0):
    """A new fine-tune Config: benchmark as in `base_cfg`, setting "fsod" or "tfa", K = shots."""
    if setting not in SURGERY_OF_SETTING:
        raise ValueError(f"setting must be 'fsod' or 'tfa', got {setting!r}")
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}")
    cfg = base_cfg(benchmark, voc_split)
    cfg.data.setting = setting
    cfg.data.shots = shots
    base, novel = cfg.data.base_classes, cfg.data.novel_classes
    if benchmark != "custom":  # custom: 0 = from the data set (`data_spec`)
        cfg.model.num_classes = len(novel) if setting == "fsod" else len(base) + len(novel)
    surgery = SURGERY_OF_SETTING[setting]
    cfg.model.surgery = surgery
    cfg.model.base_weights = base_weights_path(benchmark, voc_split, surgery)
    cfg.model.weights = ""  # the backbone comes from base_weights
    cfg.model.gdl_scale_roi = GDL_SCALE_ROI_FINETUNE[benchmark]
    cfg.model.freeze_res5 = True  # ROI_HEADS.FREEZE_FEAT
    cfg.model.cls_dropout = 0.8  # ROI_HEADS.CLS_DROPOUT with DROPOUT_RATIO 0.8
    cfg.solver.base_lr = 0.01
    cfg.solver.warmup_iters = 0
    cfg.solver.checkpoint_period = 1000
    cfg.test.pcb.enable = True
    if benchmark == "toy":
        _toy_finetune(cfg)
    return cfg


def _toy_finetune(cfg):
    # After base training the BN statistics are calibrated: fine-tune with them frozen and
    # the stem, res2, res3 frozen, as DeFRCN does; half the base LR, as 0.01 is to 0.02.
    cfg.model.norm = "frozen_bn"
    cfg.model.freeze_at = 3
    cfg.solver.base_lr = 5e-4
    cfg.solver.checkpoint_period = 50
