"""The peak resident memory of this process, as the benchmark and the training log report it."""
import resource
import sys

__all__ = ["peak_rss_mib"]


def peak_rss_mib():
    """This process's peak resident set size in MiB.

    On Linux it is `VmHWM` from /proc/self/status: `getrusage`'s ru_maxrss survives `exec`, so a
    process started by a larger one (a test runner, a notebook, a driver script) would report the
    parent's peak as its own. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
