"""Class splits of the few-shot benchmarks, as data.

Sources: TFA (ucbdrive/few-shot-object-detection) `fsdet/data/builtin_meta.py` and DeFRCN
(er-muyue/DeFRCN) `defrcn/data/builtin_meta.py`, which agree.
Contiguous ids are positions in the lists returned here:
- COCO: all 80 = COCO ids ascending; novel = the 20 VOC-like classes by ascending id;
  base = the other 60 by ascending id.
- VOC: base sets use the split's BASE list, novel sets its NOVEL list, "all" sets its
  ALL_CLASSES order (15 base first, then the 5 novel, in the order below).
"""

__all__ = [
    "COCO_CATEGORIES",
    "COCO_CLASSES",
    "COCO_NOVEL_CLASSES",
    "COCO_BASE_CLASSES",
    "VOC_CLASSES",
    "VOC_NOVEL_CLASSES",
    "VOC_ALL_CLASSES",
    "coco_split_classes",
    "coco_category_id",
    "voc_split_classes",
]

# (COCO category id, name) for the 80 COCO 2014/2017 detection classes, in id order
# (ids are not contiguous: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused). Source: instances_*.json.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)
COCO_CLASSES = tuple(name for _, name in COCO_CATEGORIES)

# COCO novel classes = the 20 PASCAL VOC categories (TFA / DeFRCN builtin_meta.py), ascending COCO id.
_COCO_NOVEL_IDS = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
COCO_NOVEL_CLASSES = tuple(name for cid, name in COCO_CATEGORIES if cid in _COCO_NOVEL_IDS)
COCO_BASE_CLASSES = tuple(name for cid, name in COCO_CATEGORIES if cid not in _COCO_NOVEL_IDS)

# The 20 PASCAL VOC classes in the standard alphabetical order (VOC devkit).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# Per split: the 5 novel classes in the order TFA / DeFRCN list them (builtin_meta.py PASCAL_VOC_NOVEL_CATEGORIES).
VOC_NOVEL_CLASSES = {
    1: ("bird", "bus", "cow", "motorbike", "sofa"),
    2: ("aeroplane", "bottle", "cow", "horse", "sofa"),
    3: ("boat", "cat", "motorbike", "sheep", "sofa"),
}

# Per split: the ALL_CLASSES order (builtin_meta.py PASCAL_VOC_ALL_CATEGORIES): 15 base, then the 5 novel.
VOC_ALL_CLASSES = {
    1: ("aeroplane", "bicycle", "boat", "bottle", "car", "cat", "chair", "diningtable",
        "dog", "horse", "person", "pottedplant", "sheep", "train", "tvmonitor",
        "bird", "bus", "cow", "motorbike", "sofa"),
    2: ("bicycle", "bird", "boat", "bus", "car", "cat", "chair", "diningtable", "dog",
        "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
        "aeroplane", "bottle", "cow", "horse", "sofa"),
    3: ("aeroplane", "bicycle", "bird", "bottle", "bus", "car", "chair", "cow",
        "diningtable", "dog", "horse", "person", "pottedplant", "train", "tvmonitor",
        "boat", "cat", "motorbike", "sheep", "sofa"),
}


def coco_split_classes():
    """Return (base, novel, all) COCO class-name lists in contiguous-id order."""
    return list(COCO_BASE_CLASSES), list(COCO_NOVEL_CLASSES), list(COCO_CLASSES)


def coco_category_id(name):
    """The COCO category id of class `name` (KeyError if it is not a COCO class)."""
    for cid, cname in COCO_CATEGORIES:
        if cname == name:
            return cid
    raise KeyError(name)


def voc_split_classes(split):
    """Return (base, novel, all_order) VOC class-name lists of split 1, 2 or 3."""
    if split not in VOC_ALL_CLASSES:
        raise ValueError(f"VOC split must be 1, 2 or 3, got {split!r}")
    all_order = list(VOC_ALL_CLASSES[split])
    return all_order[:15], list(VOC_NOVEL_CLASSES[split]), all_order
