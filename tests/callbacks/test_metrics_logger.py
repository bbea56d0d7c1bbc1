"""MetricsLogger: metrics.jsonl fields, log.txt lines, console lines, progress bar."""
import json

import pytest

from defrcn.callbacks.metrics_logger import MetricsLogger, _drop_records_after

LOSS_NAMES = ("loss_mse", "loss_l1")


def lr_of(iteration):
    return 0.01 * iteration


def test_jsonl_log_and_console(tmp_path, tiny_training, capsys):
    tiny_training(lambda optimizer: [MetricsLogger(output_dir=str(tmp_path), loss_names=LOSS_NAMES, period=2,
                                                   lr_fn=lr_of, max_iter=5, is_main=True,
                                                   progress_bar=False)], max_iter=5)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [2, 4, 5]  # every period and the last iteration
    for record in records:
        assert set(record) == {"iter", "total_loss", "loss_mse", "loss_l1", "lr", "time",
                               "data_time", "eta_seconds", "peak_rss_mib"}
        assert record["total_loss"] == pytest.approx(record["loss_mse"] + record["loss_l1"], rel=1e-5)
        assert record["lr"] == pytest.approx(lr_of(record["iter"]))
        assert record["time"] > 0 and record["data_time"] >= 0 and record["peak_rss_mib"] > 10
    assert records[-1]["eta_seconds"] == 0
    log_lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(log_lines) == 3 and log_lines[0].startswith("iter: 2  total_loss: ")
    assert "loss_l1: " in log_lines[0] and "eta: " in log_lines[0]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("iter: ")]
    assert printed == log_lines


def test_progress_bar_and_resume_appends(tmp_path, tiny_training, capsys):
    make = lambda optimizer: [MetricsLogger(output_dir=str(tmp_path), loss_names=LOSS_NAMES,  # noqa: E731
                                            period=1, lr_fn=lr_of, max_iter=4, progress_bar=True)]
    tiny_training(make, max_iter=2)
    tiny_training(make, max_iter=4, start_iter=2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "4/4" in err and "s/it" in err


def test_other_ranks_write_nothing(tmp_path, tiny_training):
    tiny_training(lambda optimizer: [MetricsLogger(output_dir=str(tmp_path), loss_names=LOSS_NAMES, period=1,
                                                   lr_fn=lr_of, max_iter=2, is_main=False)],
                  max_iter=2)
    assert list(tmp_path.iterdir()) == []


def test_records_past_the_resume_point_and_a_torn_line_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"iter": i, "total_loss": 1.0 / i}) for i in (1, 2, 3, 4)]
    lines.append(json.dumps({"iter": 4, "eval/bAP50": 12.5}))
    path.write_text("\n".join(lines) + '\n{"iter": 5, "total_lo')
    _drop_records_after(str(path), 2)
    assert [json.loads(line)["iter"] for line in path.read_text().splitlines()] == [1, 2]
    before = path.stat().st_mtime_ns
    _drop_records_after(str(path), 2)  # nothing to drop: the file is left alone
    assert path.stat().st_mtime_ns == before
