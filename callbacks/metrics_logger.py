"""Loss/LR/time logging: a console line, `log.txt` and `metrics.jsonl` (the README's
"Output folder").

Every `period` iterations one JSON line: {"iter", <each loss part>, "total_loss", "lr",
"time" (s/iteration averaged over the period; the first
period includes graph compilation), "data_time" (s waiting for the next batch
between steps, averaged), "eta_seconds", "peak_rss_mib"}. On a TTY a tqdm bar shows loss,
lr, s/it and ETA and the lines go through `tqdm.write`; otherwise lines are printed.
MindSpore's LossMonitor/TimeMonitor print only the first output and epoch timings, so they
cannot show the named parts: this callback replaces them.
"""
import json
import os
import sys
import time

from mindspore.train import Callback

from defrcn.callbacks.period import current_iteration, every_n, loss_parts
from defrcn.utils.atomic import write_text_atomic
from defrcn.utils.rss import peak_rss_mib


def format_line(record, loss_names):
    """One human line for a metrics record."""
    eta = int(record.get("eta_seconds", 0))
    parts = "  ".join(f"{name}: {record[name]:.4g}" for name in ("total_loss", *loss_names))
    return (f"iter: {record['iter']}  {parts}  lr: {record['lr']:.4g}  "
            f"time: {record['time']:.3f}  data_time: {record['data_time']:.3f}  "
            f"eta: {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}  "
            f"peak_rss: {record['peak_rss_mib']:.0f} MiB")


class MetricsLogger(Callback):
    """Args: output_dir; loss_names (the parts after the total); period (iterations);
    lr_fn(iteration) -> float (the LR used by that 1-based iteration); max_iter (the last
    iteration); is_main (False: do nothing); progress_bar (None: when stdout is a TTY)."""

    def __init__(self, *, output_dir, loss_names, period, lr_fn, max_iter, is_main=True, progress_bar=None):
        super().__init__()
        self.output_dir = output_dir
        self.loss_names = tuple(loss_names)
        self.period = int(period)
        self.lr_fn = lr_fn
        self.total_steps = int(max_iter)
        self.is_main = bool(is_main)
        self.progress_bar = sys.stdout.isatty() if progress_bar is None else progress_bar
        self._bar = None
        self._files = []
        self._window = []  # (step_seconds, data_seconds) of the micro-steps since the last line
        self._window_start_iter = 0
        self._step_start = None
        self._step_end = None

    def on_train_begin(self, run_context):
        if not self.is_main:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        start, _ = current_iteration(run_context)
        jsonl = os.path.join(self.output_dir, "metrics.jsonl")
        _drop_records_after(jsonl, start)
        self._log = open(os.path.join(self.output_dir, "log.txt"), "a", encoding="utf-8")
        self._jsonl = open(jsonl, "a", encoding="utf-8")
        self._files = [self._log, self._jsonl]
        self._window_start_iter = start
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_steps, initial=start, unit="it", dynamic_ncols=True)
        self._step_end = time.perf_counter()

    def on_train_step_begin(self, run_context):
        if self.is_main:
            self._step_start = time.perf_counter()

    def on_train_step_end(self, run_context):
        if not self.is_main:
            return
        now = time.perf_counter()
        data_seconds = self._step_start - self._step_end if self._step_end is not None else 0.0
        self._window.append((now - self._step_start, data_seconds))
        self._step_end = now
        iteration, is_update_step = current_iteration(run_context)
        if not is_update_step:
            return
        if self._bar is not None:
            self._bar.update(iteration - self._bar.n)
        if not (every_n(iteration, self.period) or iteration >= self.total_steps):
            return
        parts = loss_parts(run_context.original_args().net_outputs, self.loss_names)
        self._emit(iteration, parts)

    def _emit(self, iteration, parts):
        iterations = max(iteration - self._window_start_iter, 1)
        step_time = sum(s for s, _ in self._window) / iterations
        data_time = sum(d for _, d in self._window) / iterations
        self._window = []
        self._window_start_iter = iteration
        record = {"iter": iteration, **parts, "lr": float(self.lr_fn(iteration)),
                  "time": step_time, "data_time": data_time,
                  "eta_seconds": max(self.total_steps - iteration, 0) * step_time,
                  "peak_rss_mib": peak_rss_mib()}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        line = format_line(record, self.loss_names)
        self._log.write(line + "\n")
        self._log.flush()
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss={parts['total_loss']:.4g} lr={record['lr']:.3g} "
                                      f"{step_time:.2f}s/it", refresh=False)
            self._bar.write(line)
        else:
            print(line, flush=True)

    def on_train_end(self, run_context):
        self._close()

    def __exit__(self, *err):
        self._close()  # also runs when a callback (e.g. NanGuard) raised

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for handle in self._files:
            handle.close()
        self._files = []


def _drop_records_after(path, iteration):
    """Rewrite metrics.jsonl without the records of iterations after `iteration` (those of a
    killed run past the checkpoint a resume starts from, and a line cut short by the kill), so
    that a resumed run logs each iteration once, as an uninterrupted one. log.txt, the human
    log, keeps everything."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of a killed writer
        if not isinstance(record, dict) or record.get("iter", 0) <= iteration:
            kept.append(line)
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
