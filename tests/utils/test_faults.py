"""defrcn.utils.faults: a process dies of SIGKILL at a fault point only when $DEFRCN_FAULT
lists that point."""
import os
import signal
import subprocess
import sys

import pytest

from defrcn.utils.faults import FAULT_ENV

SCRIPT = "from defrcn.utils.faults import fault_point; fault_point('eval:start'); print('alive')"


def run(fault):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault is not None:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("fault", ["eval:start", "checkpoint_write:after_temp, eval:start "])
def test_listed_point_kills_the_process(fault):
    result = run(fault)
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == ""


@pytest.mark.parametrize("fault", [None, "", "checkpoint_write:after_temp", "eval"])
def test_unlisted_point_lets_the_process_live(fault):
    result = run(fault)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\n"
