"""The parameter names of defrcn/modeling/param_names.py exist in a built detector, with the
box predictor's shapes."""
import pytest

from defrcn.modeling.detector import build_detector
from defrcn.modeling.param_names import (BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, PREDICTOR_KEYS,
                                         SAMPLE_STEP)

NUM_CLASSES = 3
RES5_CHANNELS = 512  # ResNet-18: res5 (the RoI head) gives 512 channels, the predictor's input


@pytest.fixture(scope="module")
def parameters():
    """{name: shape} of a small ResNet-18 detector for 3 classes."""
    detector = build_detector(num_classes=NUM_CLASSES, depth=18, norm="bn", freeze_at=0, verbose=False,
                              rpn=dict(pre_nms_topk_test=100, post_nms_topk_test=20),
                              roi=dict(detections_per_image=10))
    return {p.name: tuple(p.shape) for p in detector.get_parameters()}


def test_predictor_keys_are_the_box_predictor_in_order():
    assert PREDICTOR_KEYS == (CLS_WEIGHT, CLS_BIAS, BOX_WEIGHT, BOX_BIAS)
    assert all(name.startswith("roi_heads.box_predictor.") for name in PREDICTOR_KEYS)


@pytest.mark.parametrize("name, shape", [
    (CLS_WEIGHT, (NUM_CLASSES + 1, RES5_CHANNELS)),  # C classes + background
    (CLS_BIAS, (NUM_CLASSES + 1,)),
    (BOX_WEIGHT, (4 * NUM_CLASSES, RES5_CHANNELS)),  # class-specific boxes
    (BOX_BIAS, (4 * NUM_CLASSES,)),
])
def test_each_predictor_key_is_a_detector_parameter_of_its_shape(parameters, name, shape):
    assert name in parameters, sorted(n for n in parameters if "predictor" in n)
    assert parameters[name] == shape


def test_sample_step_is_a_detector_parameter(parameters):
    assert SAMPLE_STEP in parameters
    assert parameters[SAMPLE_STEP] == ()  # one scalar counter
