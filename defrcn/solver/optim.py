"""Optimizers with detectron2's weight-decay groups and a per-step learning rate.

Which decay a trainable parameter gets (detectron2 v0.3 `build_optimizer`, the rule the
original DeFRCN trained with; detectron2 v0.3 `solver/build.py`):

* norm: a parameter of a normalisation Cell (BatchNorm*, GroupNorm, LayerNorm,
  InstanceNorm*; when only parameters are given, names ending in `.gamma`/`.beta`, the
  MindSpore names of norm scales and shifts) -> `weight_decay_norm` (0.0);
* bias: any other parameter named `bias` or ending in `.bias` -> `weight_decay_bias`
  (1e-4, not 5e-5: the d2 quirk). DeFRCN's per-channel affine after the GDL is not a norm:
  its `weight` gets `weight_decay` and its `bias` `weight_decay_bias`;
* weight: everything else -> `weight_decay` (5e-5).

Only parameters with `requires_grad` are optimised. The learning rate is a per-step
array turned into a Tensor: the optimizer's `global_step` parameter indexes it, and
that parameter is saved in checkpoints, so a resumed run continues on the same LR.
"""
import numpy as np
from mindspore import Tensor, nn

__all__ = ["classify_parameters", "parameter_groups", "build_sgd", "build_adamw"]

NORM_CELLS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def classify_parameters(net_or_params):
    """Map each trainable parameter's name to "norm", "bias" or "weight" (the rule above).

    Accepts a Cell (norm membership decided by Cell type, names as a fallback) or an
    iterable of Parameters (names only). Parameters without `requires_grad` are left out.
    """
    return {param.name: kind for param, kind in _classified(net_or_params)}


def _classified(net_or_params):
    """[(parameter, kind)] over the trainable parameters, in the net's order."""
    norm_ids = set()
    if isinstance(net_or_params, nn.Cell):
        for _, cell in net_or_params.cells_and_names():
            if isinstance(cell, NORM_CELLS):
                norm_ids.update(id(p) for _, p in cell.parameters_and_names(expand=False))
        params = net_or_params.trainable_params()
    else:
        params = [p for p in net_or_params if p.requires_grad]
    pairs = []
    for param in params:
        leaf = param.name.rsplit(".", 1)[-1]
        if id(param) in norm_ids or leaf in ("gamma", "beta"):
            pairs.append((param, "norm"))
        elif leaf == "bias":
            pairs.append((param, "bias"))
        else:
            pairs.append((param, "weight"))
    return pairs


def parameter_groups(net_or_params, weight_decay, weight_decay_bias, weight_decay_norm):
    """MindSpore group dicts [{"params": [...], "weight_decay": wd}, ...]; empty groups dropped."""
    pairs = _classified(net_or_params)
    decay = {"weight": weight_decay, "bias": weight_decay_bias, "norm": weight_decay_norm}
    groups = []
    for kind in ("weight", "bias", "norm"):
        members = [p for p, k in pairs if k == kind]
        if members:
            groups.append({"params": members, "weight_decay": float(decay[kind])})
    if not groups:
        raise ValueError("no trainable parameters to optimise")
    return groups


def _lr_tensor(lr_per_step):
    rates = np.asarray(lr_per_step, dtype=np.float32).reshape(-1)
    if rates.size == 0:
        raise ValueError("lr_per_step is empty (max_iter must be >= 1)")
    return Tensor(rates)


def build_sgd(net_or_params, lr_per_step, momentum=0.9, weight_decay=5e-5, weight_decay_bias=1e-4,
              weight_decay_norm=0.0):
    """SGD with momentum (no Nesterov, no dampening) over the decay groups.

    Args:
        net_or_params: a Cell or an iterable of Parameters.
        lr_per_step: float array (max_iter,), e.g. from `schedule.lr_per_step`; past its
            end the last value is kept.
    Returns:
        `mindspore.nn.Momentum` (v = m v + g + wd p; p -= lr v, the PyTorch SGD update).
    """
    groups = parameter_groups(net_or_params, weight_decay, weight_decay_bias, weight_decay_norm)
    return nn.Momentum(groups, learning_rate=_lr_tensor(lr_per_step), momentum=momentum)


def build_adamw(net_or_params, lr_per_step, weight_decay=1e-2, weight_decay_bias=1e-2, weight_decay_norm=0.0,
                betas=(0.9, 0.999), eps=1e-8):
    """AdamW (decoupled weight decay) over the same groups; used by the toy CPU recipes only."""
    groups = parameter_groups(net_or_params, weight_decay, weight_decay_bias, weight_decay_norm)
    return nn.AdamWeightDecay(groups, learning_rate=_lr_tensor(lr_per_step), beta1=betas[0], beta2=betas[1],
                              eps=eps)


def optimizer_lr_table(optimizer):
    """The optimizer's own per-step learning rates (float64 numpy, entry i = step i + 1): the list
    a MindSpore optimizer keeps for a dynamic learning rate, or its one fixed value."""
    rate = optimizer.learning_rate
    if getattr(optimizer, "is_group_lr", False):
        rate = rate[0]  # parameter groups here share one schedule
    table = getattr(rate, "learning_rate", rate)  # a dynamic LR keeps its list as a Parameter
    return np.asarray(table.asnumpy(), dtype=np.float64).reshape(-1)
