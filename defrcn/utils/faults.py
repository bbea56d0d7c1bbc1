"""Fault points for crash-and-resume tests.

`DEFRCN_FAULT=point[,point...]` makes the process SIGKILL itself when it reaches a named
point, so a test kills a run at the same spot every time. Points:
`checkpoint_write:after_temp` (checkpoint bytes and hash in temp files, nothing renamed yet),
`checkpoint_write:before_pointer` (checkpoint in place, `last_checkpoint` not yet moved),
`eval:start` (a periodic evaluation about to run). Unset in normal use.
"""
import os
import signal

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "DEFRCN_FAULT"


def fault_point(name):
    """SIGKILL this process if `name` is listed in $DEFRCN_FAULT."""
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted and name in (item.strip() for item in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)
