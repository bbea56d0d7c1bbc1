"""The metrics table and json writing."""
import json
import math

from defrcn.evaluation.metrics import format_table
from defrcn.utils.atomic import write_json_atomic

METRICS = {"AP": 30.0, "AP50": 50.5, "bAP": 35.0, "bAP50": 55.25, "nAP": math.nan, "nAP50": 1.0,
           "per_class": {"cat": 35.0, "owl": math.nan}}


def test_table_has_group_columns_metric_rows_and_classes():
    lines = format_table(METRICS, base_classes=["cat"], novel_classes=["owl"]).splitlines()
    assert lines[0].split() == ["metric", "all", "base", "novel"]
    assert lines[1].split() == ["AP", "30.00", "35.00", "nan"]
    assert lines[2].split() == ["AP50", "50.50", "55.25", "1.00"]
    assert lines[-2].split() == ["cat", "35.00", "(base)"]
    assert lines[-1].split() == ["owl", "nan", "(novel)"]


def test_table_without_base_or_novel_has_one_column():
    assert format_table({"AP50": 12.0, "per_class": {}}).splitlines() == [
        "metric       all", "AP50       12.00"]


def test_json_is_written_with_nan_as_null(tmp_path):
    path = write_json_atomic(str(tmp_path / "metrics.json"), METRICS)
    data = json.loads(open(path).read())
    assert data["nAP"] is None and data["per_class"] == {"cat": 35.0, "owl": None}
    assert data["AP50"] == 50.5 and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
