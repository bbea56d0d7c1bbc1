"""The one policy for putting a weights file into the detector (fvcore's `Checkpointer.load`
shape: load by name, report what did not fit as data, decide once what is an error).

    report = load_weights(model, "output/toy_base/model_final.ckpt")             # eval, infer, --init
    report = load_weights(model, "weights/R-101-msra.ckpt", partial=True)         # ImageNet backbone

A detector checkpoint (`partial=False`): a shape that differs is an error (the classifier
first, with both class counts), so is a file lacking more than half of the model's
parameters (not a checkpoint of this model); a few missing parameters and unused entries
are logged. `partial=True` (an ImageNet backbone; the heads keep their initialisation):
shapes must fit, missing parameters are expected. `sample_step` (the samplers' counter) may
always be absent: it only seeds training-time sampling.
"""
import logging

from defrcn.checkpoint import io
from defrcn.errors import InputError
from defrcn.modeling.param_names import CLS_WEIGHT, SAMPLE_STEP

__all__ = ["load_weights", "OPTIONAL_PARAMS", "MOST_MISSING"]

logger = logging.getLogger(__name__)

OPTIONAL_PARAMS = (SAMPLE_STEP,)
MOST_MISSING = 0.5


def load_weights(model, checkpoint, *, partial=False, params=None):
    """Load `checkpoint` (a `.ckpt` path) into `model` by name; returns the `io.LoadReport`.

    params: the checkpoint's {name: value} when already read (or made, as by surgery);
    `checkpoint` then only names it in messages. InputError (one line naming the file)
    for the errors of the module docstring.
    """
    source = str(checkpoint)
    report = io.load_into(model, io.load_checkpoint(source) if params is None else params)
    if report.shape_mismatch:
        raise InputError(f"does not fit this model: {_first_mismatch(report.shape_mismatch)}", path=source)
    missing = [name for name in report.missing if name not in OPTIONAL_PARAMS]
    total = len(list(model.get_parameters()))
    if not partial and total and len(missing) > MOST_MISSING * total:
        raise InputError(f"lacks {len(missing)} of the model's {total} parameters (e.g. {missing[0]}): "
                         f"not a checkpoint of this model", path=source)
    if missing and not partial:
        logger.warning("%s: %d model parameter(s) not in the checkpoint keep their initial values (e.g. %s)",
                       source, len(missing), ", ".join(missing[:3]))
    logger.info("loaded %s (%d parameters not in the checkpoint, %d checkpoint entries unused)",
                source, len(missing), len(report.unexpected))
    return report


def _first_mismatch(mismatches):
    """The classifier's mismatch if there is one (it names the class counts), else the first."""
    classifier = [m for m in mismatches if m.name == CLS_WEIGHT]
    first = (classifier or mismatches)[0]
    text = str(first)
    if classifier:
        text += (f" — trained for {first.checkpoint_shape[0] - 1} classes, this recipe has "
                 f"{first.model_shape[0] - 1}")
    return text + (f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else "")
