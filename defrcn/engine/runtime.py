"""Device, distributed and output-folder set-up shared by the train and eval drivers."""
import logging
import os
from dataclasses import dataclass

from defrcn.errors import InputError
from defrcn.utils.atomic import pid_alive
from defrcn.utils.device import check_device, keep_graph_precision, plan_graph_memory, set_kernel_fusion

@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device, rank and world size."""

    device: str
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0


MSRUN_ROLES = ("MS_WORKER", "MS_SCHED")  # msrun runs the script once per worker and once as scheduler


def launched_by_msrun():
    """msrun (MindSpore's launcher) marks every worker, and its scheduler, with MS_ROLE."""
    return os.environ.get("MS_ROLE") in MSRUN_ROLES and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def setup_runtime(device="CPU", *, pynative=False, deterministic=False):
    """Set the MindSpore context (on Ascend keep the graph's float32: `keep_graph_precision`;
    MindSpore's memory level O1: `plan_graph_memory`; no kernel fusion, which only
    inference turns on: `set_kernel_fusion`); under msrun also init the collectives (data
    parallel).

    `deterministic`: MindSpore's deterministic kernels (`mindspore.set_deterministic`, set
    before the collectives start), which GPU and Ascend need for a bit-exact resume; CPU
    kernels are deterministic already."""
    import mindspore as ms

    check_device(device)
    ms.set_context(mode=ms.PYNATIVE_MODE if pynative else ms.GRAPH_MODE, device_target=device)
    keep_graph_precision(device)
    plan_graph_memory()
    set_kernel_fusion(device, inference=False)
    if deterministic:
        ms.set_deterministic(True)
    if not launched_by_msrun():
        return Runtime(device)
    from mindspore.communication import get_group_size, get_rank, init

    init()  # in msrun's scheduler process this serves the cluster and never returns
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return Runtime(device, get_rank(), get_group_size())


class OutputLock:
    """A lock file (`OUTPUT/.lock` holding the owner's pid) so two runs never share a folder.

    A lock left by a dead process is stale: it is taken over with a warning.
    """

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, ".lock")
        self.held = False

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.refuse_if_live()
                owner = self._owner()
                logging.getLogger(__name__).warning("removing stale lock %s (pid %s is gone)",
                                                    self.path, owner)
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise InputError("could not take the output lock", path=self.path)

    def refuse_if_live(self):
        """InputError (one line) if another live process holds the lock; nothing otherwise."""
        owner = self._owner()
        if owner is not None and owner != os.getpid() and pid_alive(owner):
            raise InputError(f"another run (pid {owner}) is using this output directory; "
                             f"wait for it or pick another --output-dir",
                             path=os.path.dirname(self.path)) from None

    def _owner(self):
        try:
            with open(self.path) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self):
        if self.held and self._owner() == os.getpid():
            os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
