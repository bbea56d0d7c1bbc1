"""Toy fine-tuning on the synthetic shapes (gFSOD): all classes, 1 shot each, on CPU.
Runs after toy_base and `tools/surgery.py --method randinit` (model.base_weights)."""
from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer, rederive

cfg = fewshot_cfg("toy", "tfa", shots=1)
TOY_FINETUNE_ITERS = 40  # shorter for fewer shots, as DeFRCN's schedules; unmeasured (docs/demo.md
# has the 10-shot recipe's results). LR drop at 0.8 x, as DeFRCN
cfg.solver.max_iter, cfg.solver.steps = TOY_FINETUNE_ITERS, [TOY_FINETUNE_ITERS * 4 // 5]
