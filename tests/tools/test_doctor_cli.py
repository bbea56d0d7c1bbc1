"""tools/doctor.py, and the same checks stopping tools/train.py before anything is built:
a novel class without instances in its split file, a base checkpoint of another class count."""
import json
import shutil

import pytest

from defrcn.data.fewshot_coco import fewshot_file_name
from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES

RECIPE = "recipes/toy_10shot.py"
SHOTS = 10
EMPTIED = NOVEL_CLASS_NAMES[0]


@pytest.fixture(scope="module")
def emptied_split(toy_root, tmp_path_factory):
    """A copy of the toy split files whose 10-shot seed-0 file of one novel class holds no box."""
    folder = tmp_path_factory.mktemp("fewshot") / "fewshot"
    shutil.copytree(toy_root / "fewshot", folder)
    path = folder / fewshot_file_name(SHOTS, EMPTIED)
    content = json.loads(path.read_text())
    content["annotations"] = []
    path.write_text(json.dumps(content))
    return folder


@pytest.fixture(scope="module")
def four_class_checkpoint(toy_root, toy_checkpoint, tmp_path_factory):
    """A toy base checkpoint with its box predictor cut to 4 classes (another base run)."""
    from defrcn.checkpoint import io
    from defrcn.checkpoint.surgery import BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, to_save_list

    base = toy_checkpoint("recipes/toy_base.py", f"data.root={toy_root}")
    params = {k: v.asnumpy() for k, v in io.load_checkpoint(str(base)).items() if not isinstance(v, str)}
    keep = list(range(4)) + [len(BASE_CLASS_NAMES)]  # 4 classes + background (last)
    params[CLS_WEIGHT], params[CLS_BIAS] = params[CLS_WEIGHT][keep], params[CLS_BIAS][keep]
    params[BOX_WEIGHT], params[BOX_BIAS] = params[BOX_WEIGHT][:16], params[BOX_BIAS][:16]
    path = tmp_path_factory.mktemp("other_base") / "model_final.ckpt"
    io.save_checkpoint(to_save_list(params), str(path))
    return path


def test_novel_class_without_instances_in_its_split_stops_doctor_and_train(
        toy_tools, toy_base_run, emptied_split, tmp_path, one_line_error):
    sets = toy_tools.sets(f"data.fewshot_dir={emptied_split}",
                 f"model.base_weights={toy_base_run / 'model_final.ckpt'}")
    doctor = toy_tools.run("doctor", RECIPE, *sets, timeout=300)
    line = one_line_error(doctor, f"class '{EMPTIED}' has no instance", "10-shot split, seed 0")
    assert f"error:   {line[len('error: '):]}" in doctor.stdout  # also listed with the other findings
    assert "ok:      test set" in doctor.stdout and "ok:      weights" in doctor.stdout

    out = tmp_path / "run"
    train = toy_tools.run("train", RECIPE, "--output-dir", out, *sets, timeout=300)
    one_line_error(train, f"class '{EMPTIED}' has no instance")
    assert not out.exists()  # stopped before the output folder, the model or the data

    # another split seed is intact: the same recipe passes
    fine = toy_tools.run("doctor", RECIPE, *sets, "--set", "data.split_seed=1", timeout=300)
    assert fine.returncode == 0, fine.stderr
    assert "ok:      split: each of the 9 classes has 10 instance(s)" in fine.stdout


def test_base_checkpoint_of_another_class_count_stops_doctor_and_train(
        toy_tools, four_class_checkpoint, tmp_path, one_line_error):
    sets = toy_tools.sets(f"model.base_weights={four_class_checkpoint}")
    doctor = toy_tools.run("doctor", RECIPE, *sets, timeout=300)
    one_line_error(doctor, str(four_class_checkpoint), "a predictor for 4 classes",
                   f"the {len(BASE_CLASS_NAMES)} base classes")
    out = tmp_path / "run"
    train = toy_tools.run("train", RECIPE, "--output-dir", out, *sets, timeout=300)
    one_line_error(train, str(four_class_checkpoint), "a predictor for 4 classes")
    assert not out.exists()


def test_warnings_do_not_stop_and_name_the_frozen_part(toy_tools, toy_base_run):
    sets = toy_tools.sets("model.freeze_at=4", f"model.base_weights={toy_base_run / 'model_final.ckpt'}")
    result = toy_tools.run("doctor", RECIPE, *sets, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning: model.freeze_at=4 freezes res4" in result.stdout
    assert all(line.split()[0] in ("ok:", "warning:") for line in result.stdout.strip().splitlines())
