"""Checkpointer: periodic + final files, pointer, pruning, no temp files, rank 0 only,
extra state, refusal of non-finite state."""
import os

import numpy as np
import pytest

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.checkpoint import io
from defrcn.checkpoint.training_state import restore_training_state


def test_periodic_final_pointer_and_prune(tmp_path, tiny_training):
    output_dir = str(tmp_path)
    made = []

    def callbacks(optimizer):
        made.append(Checkpointer(output_dir=output_dir, period=2, keep=2, optimizer=optimizer, max_iter=7, is_main=True,
                                 extra_state_fn=lambda: {"logger.window": 3}))
        return made

    step = tiny_training(callbacks, max_iter=7)
    folder = os.path.join(output_dir, "checkpoints")
    assert sorted(os.listdir(folder)) == ["model_0000004.ckpt", "model_0000004.ckpt.sha256",
                                          "model_0000006.ckpt", "model_0000006.ckpt.sha256"]
    assert [os.path.basename(p) for p in made[0].saved] == [
        "model_0000002.ckpt", "model_0000004.ckpt", "model_0000006.ckpt", "model_final.ckpt"]
    assert sorted(os.listdir(output_dir)) == ["checkpoints", "last_checkpoint", "model_final.ckpt",
                                              "model_final.ckpt.sha256"]  # no temp files
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.ckpt"

    final = os.path.join(output_dir, io.FINAL_NAME)
    params = io.load_checkpoint(final)
    extras = io.split_extras(params)
    assert extras["iteration"] == 7 and extras["logger.window"] == 3
    np.testing.assert_array_equal(params["hidden.weight"].asnumpy(),
                                  step.network.hidden.weight.asnumpy())
    assert int(params["optimizer.global_step"].asnumpy().item()) == 7
    assert "optimizer.moments.hidden.weight" in params
    iteration, other = restore_training_state(step, step.optimizer, final, with_extras=True)
    assert float(other.pop("schedule.learning_rate")) == np.float32(0.05)  # the file's LR, not restored
    assert iteration == 7 and other == {"logger.window": 3}


def test_other_ranks_write_nothing(tmp_path, tiny_training):
    tiny_training(lambda optimizer: [Checkpointer(output_dir=str(tmp_path), period=1, keep=0, optimizer=optimizer,
                                                  max_iter=3, is_main=False)],
                  max_iter=3)
    assert os.listdir(tmp_path) == []


def test_refuses_to_save_non_finite_state(tmp_path, tiny_training):
    # without a NanGuard in front, the checkpointer itself refuses the inf step
    with pytest.raises(FloatingPointError, match="refusing to save a non-finite state at iteration 2"):
        tiny_training(lambda optimizer: [Checkpointer(output_dir=str(tmp_path), period=1, keep=0,
                                                      optimizer=optimizer, max_iter=5, is_main=True)],
                      max_iter=5, bad_steps=(2,))
    assert io.find_resume_checkpoint(str(tmp_path)).endswith("model_0000001.ckpt")
