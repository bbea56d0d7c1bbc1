"""The one mapping from a recipe's `data` settings to what the library reads: `DataSpec`.

Every part that needs "which data set, which classes in which order, which K-shot split"
(the data loaders, surgery, PCB's support set, inference's class names, the pre-flight
checks) takes a resolved `DataSpec`, made once by `resolve_data_spec(cfg.data, ...)`.

Class orders (a model's contiguous class ids): setting "base" -> the base classes,
"fsod" -> the novel classes, "tfa" -> all classes in the data set's own order (COCO and
custom: ascending category id; VOC: the split's ALL_CLASSES order), as DeFRCN's
`defrcn/data/builtin_meta.py` orders them.
"""
import os
from dataclasses import dataclass
from typing import Tuple

from defrcn.data import custom
from defrcn.data.catalog import BENCHMARKS, SETTINGS, class_lists, coco_image_dirs, load_dataset
from defrcn.errors import InputError

__all__ = ["DataSpec", "resolve_data_spec", "load_split", "fewshot_records_of_class"]

_SPLIT_FOLDER = {"coco": "cocosplit", "voc": "vocsplit"}


@dataclass(frozen=True)
class DataSpec:
    """A resolved data set description (plain values; see `resolve_data_spec`)."""

    benchmark: str  # "coco", "voc", "custom" or "toy" (the custom reader on the synthetic set)
    root: str
    setting: str  # "base", "fsod" or "tfa"
    base_classes: Tuple[str, ...]  # the base run's classes, in its model's order
    novel_classes: Tuple[str, ...]
    all_classes: Tuple[str, ...]  # base and novel in the data set's order
    shots: int = 0  # K of the few-shot training set (0 in base training)
    split_seed: int = 0
    voc_split: int = 0
    split_root: str = ""  # folder of the K-shot split files, resolved

    @property
    def model_classes(self):
        """Class names in the order of the model's contiguous class ids."""
        if self.setting == "base":
            return self.base_classes
        return self.novel_classes if self.setting == "fsod" else self.all_classes

    @property
    def num_classes(self):
        return len(self.model_classes)

    @property
    def reader(self):
        """The catalog reader: "toy" data is read as a custom data set."""
        return "custom" if self.benchmark == "toy" else self.benchmark

    def catalog_split(self, split):
        """"train" (the base set or the K-shot set, per setting) or "test" -> the catalog's name."""
        if split == "test":
            return "test"
        if split == "train":
            return "train_base" if self.setting == "base" else "train_fewshot"
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def resolve_data_spec(data, *, num_classes=0):
    """`DataSpec` of a recipe's `data` settings (cfg.data); the settings are not changed.

    Empty class lists of a custom or toy data set come from its train json: novel =
    `data.novel_classes`, else the json's `info.novel_classes`; base = every other category.
    COCO's and VOC's lists must be names of the benchmark (VOC: exactly the lists of
    `data.voc_split`). `num_classes` (model.num_classes; 0 = derive) must equal the setting's
    class count. InputError (one line naming the key) otherwise.
    """
    benchmark, setting = data["benchmark"], data["setting"]
    if benchmark not in BENCHMARKS:
        raise InputError(f"data.benchmark: unknown '{benchmark}' (one of {', '.join(BENCHMARKS)})")
    if setting not in SETTINGS:
        raise InputError(f"data.setting: unknown '{setting}' (one of {', '.join(SETTINGS)})")
    root = str(data["root"])
    reader = "custom" if benchmark == "toy" else benchmark
    base, novel = list(data.get("base_classes") or []), list(data.get("novel_classes") or [])
    voc_split = int(data.get("voc_split") or 0)
    if reader == "custom" and not (base and novel):
        base, novel = _classes_from_json(root, base, novel)
    shared = [name for name in base if name in novel]
    if shared:
        raise InputError(f"data.base_classes and data.novel_classes share '{shared[0]}'")
    base_order, novel_order, all_order = class_lists(reader, root=root, base_classes=base or None,
                                                     novel_classes=novel or None, voc_split=voc_split or None)
    if reader == "voc" and (base or novel) and (base, novel) != (list(base_order), list(novel_order)):
        raise InputError(f"data.base_classes/novel_classes: VOC split {voc_split} has the novel classes "
                         f"{', '.join(novel_order)}; a VOC recipe's classes follow data.voc_split")
    spec = DataSpec(benchmark=benchmark, root=root, setting=setting, base_classes=tuple(base_order),
                    novel_classes=tuple(novel_order), all_classes=tuple(all_order),
                    shots=int(data.get("shots") or 0), split_seed=int(data.get("split_seed") or 0),
                    voc_split=voc_split, split_root=_split_root(reader, root, data.get("fewshot_dir") or ""))
    if spec.num_classes == 0:
        raise InputError(f"model.num_classes: no classes for setting '{setting}' (set data.novel_classes=a,b)")
    if num_classes and num_classes != spec.num_classes:
        raise InputError(f"model.num_classes: {num_classes}, but setting '{setting}' with these class lists "
                         f"has {spec.num_classes} classes")
    return spec


def _classes_from_json(root, base, novel):
    from defrcn.data.coco import category_names, read_json

    json_file = custom.annotation_file(root, "train")
    content = read_json(json_file)
    id_to_name = category_names(content, json_file)
    names = [id_to_name[i] for i in sorted(id_to_name)]
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    novel = list(novel or info.get("novel_classes") or [])
    custom.check_class_names(novel, names, json_file, what="novel class")
    base = list(base or [n for n in names if n not in novel])
    custom.check_class_names(base, names, json_file, what="base class")
    return base, novel


def _split_root(reader, root, fewshot_dir):
    if fewshot_dir:
        return str(fewshot_dir)
    if reader == "custom":
        return custom.default_split_root(root)
    return os.path.join(root, _SPLIT_FOLDER[reader])


def load_split(spec, split):
    """(records, DatasetMeta) of "train" (base or K-shot set, per the setting) or "test"."""
    return load_dataset(spec.reader, spec.catalog_split(split), root=spec.root,
                        base_classes=list(spec.base_classes), novel_classes=list(spec.novel_classes),
                        setting=spec.setting, shots=spec.shots or None, split_seed=spec.split_seed,
                        voc_split=spec.voc_split or None, split_root=spec.split_root)


def fewshot_records_of_class(spec, name):
    """Records of one class's K-shot split file (that class's boxes only)."""
    if spec.reader == "voc":
        from defrcn.data.voc import load_fewshot_voc

        return load_fewshot_voc(spec.root, spec.split_root, [name], spec.shots, spec.split_seed, spec.voc_split)
    from defrcn.data.fewshot_coco import load_fewshot_coco

    if spec.reader == "coco":
        return load_fewshot_coco(spec.split_root, [name], spec.shots, spec.split_seed, coco_image_dirs(spec.root))
    return load_fewshot_coco(spec.split_root, [name], spec.shots, spec.split_seed,
                             custom.image_dirs(spec.root, "train"), strict=True)
