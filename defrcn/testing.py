"""Small pieces shared by the tests (as mmengine.testing): nothing here runs in training."""
import numpy as np
from mindspore import nn, ops


class TinyRegression(nn.Cell):
    """2-layer MLP standing in for the detector: returns (total, mse, l1) as the detector
    returns (total, *loss parts)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(3, 8)
        self.out = nn.Dense(8, 1)

    def construct(self, x, y):
        pred = self.out(ops.tanh(self.hidden(x)))
        mse = ((pred - y) ** 2).mean()
        l1 = ops.abs(pred - y).mean() * 0.5
        return mse + l1, mse, l1


def write_torch_file(path, obj, *, legacy=False):
    """Write `obj` (dicts / lists / tuples of str, int, float, bool, None and numpy arrays) as
    `torch.save` does, without PyTorch: the zip format of torch >= 1.6 (`archive/data.pkl`,
    `archive/data/<key>`, `archive/byteorder`) or, with `legacy`, the pre-1.6 stream (magic
    number, protocol 1001, system info, object, storage keys, then each storage as an int64
    element count and its bytes). Each array becomes a tensor record over its own storage
    (`torch._utils._rebuild_tensor_v2` with a `('storage', torch.<T>Storage, key, 'cpu', numel)`
    persistent id), the structure torch writes for a state dict."""
    import io as _io
    import pickle
    import struct
    import zipfile

    storage_names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                     np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                     np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                     np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                     np.dtype(np.bool_): "BoolStorage"}
    storages = []  # (key, contiguous array)
    out = _io.BytesIO()

    def op(code, data=b""):
        out.write(code + data)

    def text(value):
        raw = value.encode("utf-8")
        op(b"X", struct.pack("<I", len(raw)) + raw)  # BINUNICODE

    def write(value):
        if isinstance(value, np.ndarray):
            array = np.array(value, order="C")  # ascontiguousarray would make 0-d arrays 1-d
            key = str(len(storages))
            storages.append((key, array))
            op(b"c", b"torch._utils\n_rebuild_tensor_v2\n")  # GLOBAL
            op(b"(")  # MARK of the call's arguments
            op(b"(")  # MARK of the persistent id
            text("storage")
            op(b"c", b"torch\n" + storage_names[array.dtype].encode() + b"\n")
            text(key)
            text("cpu")
            write(int(array.size))
            if legacy:
                op(b"N")  # no view record
            op(b"t")
            op(b"Q")  # BINPERSID
            write(0)
            write(tuple(int(n) for n in array.shape))
            write(tuple(int(s // array.itemsize) for s in array.strides) if array.ndim else ())
            op(b"\x89")  # requires_grad False
            op(b"c", b"collections\nOrderedDict\n")
            op(b")")
            op(b"R")  # backward hooks: OrderedDict()
            op(b"t")
            op(b"R")
        elif isinstance(value, dict):
            op(b"}")
            for key, item in value.items():
                write(key)
                write(item)
                op(b"s")  # SETITEM
        elif isinstance(value, list):
            op(b"]")  # EMPTY_LIST, then MARK items APPENDS
            op(b"(")
            for item in value:
                write(item)
            op(b"e")
        elif isinstance(value, tuple):
            op(b"(")
            for item in value:
                write(item)
            op(b"t")
        elif isinstance(value, str):
            text(value)
        elif isinstance(value, bool):
            op(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            op(b"\x8a", bytes([8]) + int(value).to_bytes(8, "little", signed=True))  # LONG1
        elif isinstance(value, float):
            op(b"G", struct.pack(">d", value))  # BINFLOAT
        elif value is None:
            op(b"N")
        else:
            raise TypeError(f"write_torch_file: {type(value).__name__} is not supported")

    op(b"\x80\x02")  # PROTO 2
    write(obj)
    op(b".")
    record = out.getvalue()
    if legacy:
        with open(path, "wb") as handle:
            for header in (0x1950a86a20f9469cfc6c, 1001,
                           {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, handle, protocol=2)
            handle.write(record)
            pickle.dump([key for key, _ in storages], handle, protocol=2)
            for _, array in storages:
                handle.write(struct.pack("<q", array.size) + array.tobytes())
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", record)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages:
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")


STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def resnet_block_shapes(depth):
    """[(stage 2..5, block, [(conv, (out, in, k, k))], shortcut (out, in) or None)] of a
    detectron2 ResNet (BasicBlock for 18, BottleneckBlock otherwise; res2 out 64 / 256)."""
    bottleneck = depth >= 50
    blocks, channels = [], 64
    for stage, count in zip((2, 3, 4, 5), STAGE_BLOCKS[depth]):
        width = 64 * 2 ** (stage - 2)
        out = width * 4 if bottleneck else width
        for block in range(count):
            c_in = channels if block == 0 else out
            if bottleneck:
                convs = [("conv1", (width, c_in, 1, 1)), ("conv2", (width, width, 3, 3)), ("conv3", (out, width, 1, 1))]
            else:
                convs = [("conv1", (out, c_in, 3, 3)), ("conv2", (out, out, 3, 3))]
            shortcut = (out, c_in) if block == 0 and c_in != out else None
            blocks.append((stage, block, convs, shortcut))
        channels = out
    return blocks


def random_or_zeros(shape, rng, zeros):
    """float32 array of `shape`: zeros, or standard normal draws from `rng`."""
    return np.zeros(shape, np.float32) if zeros else rng.normal(size=shape).astype(np.float32)


def original_defrcn_state(depth, num_classes, num_anchors=15, seed=0, zeros_backbone=False, predictor=True):
    """{name: array} of the original DeFRCN GeneralizedRCNN at `depth` (C4, res5 in the ROI heads),
    random values, with the names and shapes er-muyue/DeFRCN's checkpoints have."""
    rng = np.random.default_rng(seed)
    state = {"backbone.stem.conv1.weight": random_or_zeros((64, 3, 7, 7), rng, zeros_backbone)}
    norm = ("weight", "bias", "running_mean", "running_var")
    for field in norm:
        state[f"backbone.stem.conv1.norm.{field}"] = random_or_zeros((64,), rng, zeros_backbone)
    for stage, block, convs, shortcut in resnet_block_shapes(depth):
        prefix = f"roi_heads.res5.{block}." if stage == 5 else f"backbone.res{stage}.{block}."
        layers = list(convs) + ([("shortcut", shortcut + (1, 1))] if shortcut else [])
        for conv, shape in layers:
            state[prefix + conv + ".weight"] = random_or_zeros(shape, rng, zeros_backbone)
            for field in norm:
                state[f"{prefix}{conv}.norm.{field}"] = random_or_zeros(shape[:1], rng, zeros_backbone)
    c4 = state["backbone.res4.0.conv1.weight"].shape[0] * (4 if depth >= 50 else 1)
    c5 = c4 * 2
    heads = {"proposal_generator.rpn_head.conv.weight": (c4, c4, 3, 3), "proposal_generator.rpn_head.conv.bias": (c4,),
             "proposal_generator.rpn_head.objectness_logits.weight": (num_anchors, c4, 1, 1),
             "proposal_generator.rpn_head.objectness_logits.bias": (num_anchors,),
             "proposal_generator.rpn_head.anchor_deltas.weight": (4 * num_anchors, c4, 1, 1),
             "proposal_generator.rpn_head.anchor_deltas.bias": (4 * num_anchors,),
             "affine_rpn.weight": (1, c4, 1, 1), "affine_rpn.bias": (1, c4, 1, 1),
             "affine_rcnn.weight": (1, c4, 1, 1), "affine_rcnn.bias": (1, c4, 1, 1)}
    if predictor:
        heads.update({"roi_heads.box_predictor.cls_score.weight": (num_classes + 1, c5),
                      "roi_heads.box_predictor.cls_score.bias": (num_classes + 1,),
                      "roi_heads.box_predictor.bbox_pred.weight": (4 * num_classes, c5),
                      "roi_heads.box_predictor.bbox_pred.bias": (4 * num_classes,)})
    for name, shape in heads.items():
        state[name] = rng.normal(size=shape).astype(np.float32)
    state["proposal_generator.anchor_generator.cell_anchors.0"] = np.zeros((num_anchors, 4), np.float32)
    return state


# mindcv name piece -> torchvision's (the inverse of tools/convert.py torchvision)
_MINDCV_TO_TORCHVISION = (("classifier.", "fc."), (".down_sample.", ".downsample."), (".gamma", ".weight"),
                          (".beta", ".bias"), (".moving_mean", ".running_mean"),
                          (".moving_variance", ".running_var"))


def torchvision_resnet_shapes(depth, num_classes=1000):
    """{torchvision name: shape} of a torchvision ResNet (from mindcv's model of that depth)."""
    import mindcv

    shapes = {}
    for name, param in mindcv.create_model(f"resnet{depth}", num_classes=num_classes).parameters_dict().items():
        for ours, theirs in _MINDCV_TO_TORCHVISION:
            name = name.replace(ours, theirs)
        shapes[name] = tuple(param.shape)
    return shapes
