"""defrcn.utils.rss.peak_rss_mib: this process's peak, not the one of the process that started it."""
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_process_started_by_a_larger_one_reports_its_own_peak():
    held = np.ones(600 * 2**18, np.float32)  # this process: 600 MiB more, every page written
    code = ("import numpy as np\n"
            "from defrcn.utils.rss import peak_rss_mib\n"
            "start = peak_rss_mib()\n"
            "touched = np.ones(300 * 2**18, np.float32)\n"
            "print(start, peak_rss_mib())\n")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    start, end = map(float, child.stdout.split())
    assert start < 200 < held.nbytes / 2**20  # a bare interpreter with numpy, not the parent's peak
    assert 290 <= end - start <= 330  # and what it touches itself
