import pickle
import sys

import numpy as np
import pytest

import mindspore.nn as nn
from mindspore import Tensor

from defrcn.checkpoint import io
from defrcn.checkpoint.convert import (BN_EPS, convert, convert_detectron2_weights, convert_torchvision_state,
                                       detectron2_to_detector_name, read_torch_state_dict,
                                       torchvision_to_mindcv_name)
from defrcn.errors import InputError
from defrcn.testing import torchvision_resnet_shapes, write_torch_file

MAX_ABS_DIFF = 2e-4  # logits up to ~25; measured 6e-6 and 2e-5: float32 summation order


def test_torchvision_names_map_to_mindcv():
    assert torchvision_to_mindcv_name("conv1.weight") == "conv1.weight"
    assert torchvision_to_mindcv_name("bn1.running_var") == "bn1.moving_variance"
    assert torchvision_to_mindcv_name("layer2.0.bn3.weight") == "layer2.0.bn3.gamma"
    assert torchvision_to_mindcv_name("layer3.0.downsample.0.weight") == "layer3.0.down_sample.0.weight"
    assert torchvision_to_mindcv_name("layer3.0.downsample.1.bias") == "layer3.0.down_sample.1.beta"
    assert torchvision_to_mindcv_name("layer1.0.conv2.weight") == "layer1.0.conv2.weight"
    assert torchvision_to_mindcv_name("fc.weight") == "classifier.weight"
    assert torchvision_to_mindcv_name("layer1.0.bn1.num_batches_tracked") is None


def random_torchvision_state(depth, seed=0):
    """{torchvision name: float32 array} with the shapes of mindcv's resnet<depth>, He-scaled convs
    and BN statistics that keep activations O(1)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in torchvision_resnet_shapes(depth, num_classes=10).items():
        if len(shape) == 4:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), size=shape)
        elif name.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, size=shape)
        elif name.endswith("running_mean") or name.endswith("bias"):
            value = rng.normal(0, 0.1, size=shape)
        elif name.startswith("fc."):
            value = rng.normal(0, 1.0, size=shape)
        else:  # BN weight; a small scale on each residual branch's last BN keeps the sum bounded
            value = rng.uniform(0.2, 0.5 if name.endswith(("bn2.weight", "bn3.weight")) else 1.0, size=shape)
        state[name] = value.astype(np.float32)
        if name.endswith("running_var"):
            state[name.replace("running_var", "num_batches_tracked")] = np.array(10, dtype=np.int64)
    return state


def torch_resnet_forward(state, x, torch):
    """torchvision ResNet inference written with torch.nn.functional, stride in the 3x3."""
    F = torch.nn.functional
    t = {k: torch.from_numpy(v) for k, v in state.items()}

    def bn(h, prefix):
        return F.batch_norm(h, t[prefix + ".running_mean"], t[prefix + ".running_var"], t[prefix + ".weight"],
                            t[prefix + ".bias"], training=False, eps=BN_EPS)

    h = F.max_pool2d(F.relu(bn(F.conv2d(x, t["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for stage in (1, 2, 3, 4):
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in t:
            p = f"layer{stage}.{block}."
            stride = 2 if stage > 1 and block == 0 else 1
            bottleneck = p + "conv3.weight" in t
            if bottleneck:
                y = F.relu(bn(F.conv2d(h, t[p + "conv1.weight"]), p + "bn1"))
                y = F.relu(bn(F.conv2d(y, t[p + "conv2.weight"], stride=stride, padding=1), p + "bn2"))
                y = bn(F.conv2d(y, t[p + "conv3.weight"]), p + "bn3")
            else:
                y = F.relu(bn(F.conv2d(h, t[p + "conv1.weight"], stride=stride, padding=1), p + "bn1"))
                y = bn(F.conv2d(y, t[p + "conv2.weight"], padding=1), p + "bn2")
            if p + "downsample.0.weight" in t:
                h = bn(F.conv2d(h, t[p + "downsample.0.weight"], stride=stride), p + "downsample.1")
            h = F.relu(y + h)
            block += 1
    h = F.adaptive_avg_pool2d(h, 1).flatten(1)
    return F.linear(h, t["fc.weight"], t["fc.bias"])


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_compute_the_same_function_in_mindcv(depth, tmp_path, pynative_mode):
    torch = pytest.importorskip("torch")
    import mindcv

    state = random_torchvision_state(depth)
    src, dst = tmp_path / "resnet.pth", tmp_path / "resnet.ckpt"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, src)
    summary = convert("torchvision", str(src), str(dst))
    assert summary.depth == depth and all(n.endswith("num_batches_tracked") for n in summary.ignored)

    model = mindcv.create_model(f"resnet{depth}", num_classes=10)
    missing, unexpected, mismatch = io.load_into(model, io.load_checkpoint(str(dst)))
    assert (missing, unexpected, mismatch) == ([], [], [])
    # torchvision's stem pool pads 1 pixel on every side; mindcv's "same" pads bottom/right only
    # (defrcn/modeling/backbone.py makes the same replacement).
    model.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
    model.set_train(False)
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ours = model(Tensor(x)).asnumpy()
    reference = torch_resnet_forward(state, torch.from_numpy(x), torch).numpy()
    assert np.abs(reference).max() > 0.5  # a meaningful signal, not all zeros
    assert np.abs(ours - reference).max() < MAX_ABS_DIFF


def test_torchvision_rejects_a_non_resnet_state():
    with pytest.raises(InputError, match="not a torchvision ResNet state dict"):
        convert_torchvision_state({"weight": np.zeros((2, 2), np.float32)}, source="x.pth")
    state = random_torchvision_state(18)
    del state["layer4.1.conv2.weight"]
    with pytest.raises(InputError, match="x.pth: not a complete torchvision ResNet-18: 1 parameters missing"):
        convert_torchvision_state(state, source="x.pth")
    state = random_torchvision_state(18)
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(InputError, match=r"layer1.0.conv1.weight: shape \(64, 64, 1, 1\)"):
        convert_torchvision_state(state, source="x.pth")


def test_reading_a_pth_needs_no_torch(tmp_path, monkeypatch):
    state = random_torchvision_state(18)
    write_torch_file(tmp_path / "resnet18.pth", state)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    read = read_torch_state_dict(tmp_path / "resnet18.pth")
    assert sorted(read) == sorted(state)
    assert all(np.array_equal(read[name], value) for name, value in state.items())
    (tmp_path / "junk.pth").write_bytes(b"not really")
    with pytest.raises(InputError, match="junk.pth: not a readable weights file"):
        read_torch_state_dict(tmp_path / "junk.pth")


# --------------------------------------------------------------------------------------------
# detectron2 / Caffe2


def test_caffe2_and_detectron2_names_map_to_the_detector():
    cases = {
        "conv1_w": "backbone.conv1.weight",
        "res_conv1_bn_s": "backbone.bn1.gamma",
        "res_conv1_bn_b": "backbone.bn1.beta",
        "res2_0_branch2a_w": "backbone.layer1.0.conv1.weight",
        "res3_0_branch1_bn_s": "backbone.layer2.0.down_sample.1.gamma",
        "res4_22_branch2c_bn_b": "backbone.layer3.22.bn3.beta",
        "res4_3_branch2b_bn_riv": "backbone.layer3.3.bn2.moving_variance",
        "res5_2_branch2b_w": "roi_heads.res5.layer4.2.conv2.weight",
        "backbone.stem.conv1.norm.running_mean": "backbone.bn1.moving_mean",
        "stem.conv1.weight": "backbone.conv1.weight",
        "backbone.res2.0.shortcut.weight": "backbone.layer1.0.down_sample.0.weight",
        "backbone.res3.1.conv2.norm.running_var": "backbone.layer2.1.bn2.moving_variance",
        "res5.0.conv1.norm.weight": "roi_heads.res5.layer4.0.bn1.gamma",
        "roi_heads.res5.2.conv3.norm.bias": "roi_heads.res5.layer4.2.bn3.beta",
    }
    for source, target in cases.items():
        assert detectron2_to_detector_name(source) == target, source
    for other in ("fc1000_w", "pred_b", "roi_heads.box_predictor.cls_score.weight", "res6_0_branch2a_w"):
        assert detectron2_to_detector_name(other) is None


def _caffe2_name(ours):
    """Our detector name -> the Caffe2 (MSRA) name, or None for BN statistics (Caffe2 has none)."""
    layer = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "bn1": "branch2a_bn",
             "bn2": "branch2b_bn", "bn3": "branch2c_bn", "down_sample.0": "branch1", "down_sample.1": "branch1_bn"}
    field = {"weight": "w", "gamma": "s", "beta": "b"}
    if ours.endswith(("moving_mean", "moving_variance")):
        return None
    if ours.startswith("backbone.conv1."):
        return "conv1_w"
    if ours.startswith("backbone.bn1."):
        return "res_conv1_bn_" + field[ours.rsplit(".", 1)[1]]
    if ours.startswith("backbone.layer"):
        stage, rest = int(ours[len("backbone.layer")]) + 1, ours[len("backbone.layerN."):]
    else:
        stage, rest = 5, ours[len("roi_heads.res5.layer4."):]
    block, rest = rest.split(".", 1)
    module, param = rest.rsplit(".", 1)
    return f"res{stage}_{block}_{layer[module]}_{field[param]}"


def test_msra_r101_pickle_converts_onto_the_detector(tmp_path):
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=80, depth=101, verbose=False)
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    rng = np.random.default_rng(0)
    blobs = {}
    for name, shape in shapes.items():
        caffe2 = _caffe2_name(name) if name.startswith(("backbone.", "roi_heads.res5.")) else None
        if caffe2:
            blobs[caffe2] = rng.normal(size=shape).astype(np.float32)
            blobs[caffe2 + "_momentum"] = np.zeros(shape, np.float32)
    assert len({k for k in blobs if not k.endswith("_momentum")}) == 312  # 104 convs + 104 BN x (s, b)
    blobs["fc1000_w"], blobs["fc1000_b"] = np.zeros((1000, 2048), np.float32), np.zeros(1000, np.float32)
    src, dst = tmp_path / "R-101.pkl", tmp_path / "R-101.ckpt"
    with open(src, "wb") as handle:
        pickle.dump({"blobs": blobs}, handle)

    summary = convert("detectron2", str(src), str(dst))
    assert summary.depth == 101 and summary.ignored == ["fc1000_b", "fc1000_w"]
    assert "stride in the 1x1" in summary.note
    converted = io.load_checkpoint(str(dst))
    backbone = [n for n in shapes if n.startswith(("backbone.", "roi_heads.res5."))]
    assert sorted(converted) == sorted(backbone)

    missing, unexpected, mismatch = io.load_into(model, converted)
    assert unexpected == [] and mismatch == []
    assert not [n for n in missing if n.startswith(("backbone.", "roi_heads.res5."))]
    values = model.parameters_dict()
    # res3_0_branch2a is the strided 1x1 of the MSRA block; our layer2.0.conv1 carries that stride
    assert model.backbone.layer2[0].conv1.stride[-1] == 2 and model.backbone.layer2[0].conv2.stride[-1] == 1
    checks = {"res3_0_branch2a_w": "backbone.layer2.0.conv1.weight",
              "res4_17_branch2b_w": "backbone.layer3.17.conv2.weight",
              "res5_0_branch1_w": "roi_heads.res5.layer4.0.down_sample.0.weight",
              "res_conv1_bn_s": "backbone.bn1.gamma",
              "res5_2_branch2c_bn_b": "roi_heads.res5.layer4.2.bn3.beta"}
    for caffe2, ours in checks.items():
        assert np.array_equal(values[ours].asnumpy(), blobs[caffe2]), caffe2
    # frozen BN: mean 0 and variance 1 - eps make x * gamma / sqrt(var + eps) + beta the Caffe2 affine
    mean = values["backbone.layer3.5.bn2.moving_mean"].asnumpy()
    var = values["backbone.layer3.5.bn2.moving_variance"].asnumpy()
    assert np.all(mean == 0)
    assert np.all(1.0 / np.sqrt(var + np.float32(BN_EPS)) == np.float32(1.0))


def test_detectron2_names_with_statistics_keep_them():
    rng = np.random.default_rng(0)
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=2, depth=18, verbose=False)
    to_d2 = {"conv1": "conv1", "conv2": "conv2", "down_sample.0": "shortcut", "bn1": "conv1.norm",
             "bn2": "conv2.norm", "down_sample.1": "shortcut.norm"}
    fields = {"weight": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}
    weights = {}
    for param in model.get_parameters():
        name = param.name
        if name.startswith("backbone.conv1.") or name.startswith("backbone.bn1."):
            d2 = "backbone.stem.conv1." + ("" if name.startswith("backbone.conv1.") else "norm.")
            weights[d2 + fields[name.rsplit(".", 1)[1]]] = rng.uniform(0.5, 1, size=param.shape)
        elif name.startswith(("backbone.layer", "roi_heads.res5.layer4.")):
            stage = 5 if name.startswith("roi_heads") else int(name[len("backbone.layer")]) + 1
            rest = name.split(".", 3)[3] if stage == 5 else name.split(".", 2)[2]
            block, module_param = rest.split(".", 1)
            module, field = module_param.rsplit(".", 1)
            prefix = "roi_heads." if stage == 5 else "backbone."
            weights[f"{prefix}res{stage}.{block}.{to_d2[module]}.{fields[field]}"] = rng.uniform(0.5, 1, param.shape)
    weights["roi_heads.box_predictor.cls_score.weight"] = np.zeros((3, 512))
    converted, depth, ignored = convert_detectron2_weights(weights, source="model.pkl")
    assert depth == 18 and ignored == ["roi_heads.box_predictor.cls_score.weight"]
    assert np.array_equal(converted["backbone.layer2.1.bn2.moving_variance"],
                          weights["backbone.res3.1.conv2.norm.running_var"].astype(np.float32))
    assert np.array_equal(converted["roi_heads.res5.layer4.0.down_sample.1.moving_mean"],
                          weights["roi_heads.res5.0.shortcut.norm.running_mean"].astype(np.float32))
    del weights["backbone.res4.1.conv2.weight"]
    with pytest.raises(InputError, match="model.pkl: not a complete ResNet-18 backbone: 1 parameters missing"):
        convert_detectron2_weights(weights, source="model.pkl")
