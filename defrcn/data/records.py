"""The description every data-set reader returns next to its records.

A data set is `(records, meta)`: `records` is a list of per-image dicts (plain Python types):

    {"file_name": absolute path str, "image_id": int or str (VOC: the file id),
     "height": int, "width": int,
     "annotations": [{"bbox": [x0, y0, x1, y1] (float, absolute XYXY, original pixels),
                      "category_id": int (contiguous id), "difficult": bool}]}

and `meta` is a `DatasetMeta` (below).
"""
from dataclasses import dataclass, field
from typing import List, Optional

__all__ = ["DatasetMeta"]


@dataclass
class DatasetMeta:
    """Class list and evaluation facts of one data set.

    Contiguous id `i` <-> `class_names[i]` <-> the data set's own id `category_ids[i]`
    (COCO / custom json category ids; VOC: 1..C).
    """

    name: str
    class_names: List[str]
    category_ids: List[int]
    base_classes: List[str] = field(default_factory=list)
    novel_classes: List[str] = field(default_factory=list)
    evaluator: str = "coco"  # "coco" or "voc"
    json_file: Optional[str] = None  # COCO / custom test sets: annotation json for COCOeval

    def __post_init__(self):
        if len(self.class_names) != len(self.category_ids):
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names but "
                f"{len(self.category_ids)} category ids"
            )
        if self.evaluator not in ("coco", "voc"):
            raise ValueError(f"{self.name}: evaluator must be 'coco' or 'voc', got {self.evaluator!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def contiguous_id(self, name: str) -> int:
        """Contiguous id of class `name` (KeyError if absent)."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no class named {name!r}") from None

    def is_novel(self, contiguous_id: int) -> bool:
        return self.class_names[contiguous_id] in self.novel_classes
