"""One optimizer step on a network that returns `(total_loss, part1, part2, ...)`.

`TrainStep` plays the role of `nn.TrainOneStepCell` for a multi-part loss: it
differentiates the first output only (`ops.value_and_grad(..., has_aux=True)`), applies
the optimizer and returns the whole tuple, so callbacks see every named part in
`run_context.original_args().net_outputs`. Use it as `Model(TrainStep(net, opt))` with no
loss_fn/optimizer given to Model (see `defrcn.engine.loop.run_training`).
"""
import mindspore as ms
from mindspore import ParallelMode, Parameter, Tensor, amp, nn, ops

from defrcn.utils.heap import ReleasesHeapAfterCompile


def _data_parallel():
    mode = ms.get_auto_parallel_context("parallel_mode")
    return mode in (ParallelMode.DATA_PARALLEL, ParallelMode.HYBRID_PARALLEL)


def _scaled(scale, grad):
    return grad * scale


class _ScaledTotal(nn.Cell):
    """network -> (total * scale, total, *parts): the first output is differentiated, the
    others are returned as they are."""

    def __init__(self, network, scale):
        super().__init__(auto_prefix=False)
        self.network = network
        self.scale = scale

    def construct(self, *inputs):
        outputs = self.network(*inputs)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return (outputs[0] * self.scale,) + outputs


class TrainStep(ReleasesHeapAfterCompile, nn.Cell):
    """network(*inputs) -> (total, *parts); one call = one micro-step.

    Args:
        network_with_loss: Cell returning a tuple whose first item is the scalar to minimise
            (the sum of the parts). A single scalar is accepted too (returned as a 1-tuple).
        optimizer: a MindSpore optimizer over the trainable parameters.
        grad_accumulation: N >= 1. With N > 1 the gradients of N consecutive calls are summed
            in Parameters (`accum_grads.*`, `micro_step`) and the optimizer applies their mean
            on every N-th call. Since each micro-batch loss is a batch mean, N micro-batches of
            size b then give the gradient of one batch of size N*b. `optimizer.global_step`
            counts applied updates, so a per-step LR list is indexed by update, not call.
        loss_scaler: None, or a `mindspore.amp.DynamicLossScaler` / `StaticLossScaler` for
            mixed precision: the total is multiplied by the scale before differentiation and
            the gradients divided by it; an update whose (summed, all-reduced) gradients are not
            finite is skipped (`optimizer.global_step` still advances, so the LR stays that of
            the iteration) and a dynamic scaler adjusts its scale once per update. The scale
            (and the dynamic scaler's counter) are Parameters of this cell, `loss_scale` and
            `loss_scale_counter`, so they are checkpointed with the training state.
    Under data parallel (`parallel_mode` DATA_PARALLEL) gradients are all-reduced with
    `nn.DistributedGradReducer` before the update (mean over devices, as TrainOneStepCell).
    """

    def __init__(self, network_with_loss, optimizer, *, grad_accumulation=1, loss_scaler=None):
        super().__init__(auto_prefix=False)  # keep the network's parameter names unchanged
        if int(grad_accumulation) < 1:
            raise ValueError(f"grad_accumulation must be >= 1, got {grad_accumulation}")
        self.network = network_with_loss
        self.network.set_grad()
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_accumulation = int(grad_accumulation)
        self.scaled = loss_scaler is not None
        self.dynamic_scale = isinstance(loss_scaler, amp.DynamicLossScaler)
        if self.scaled:
            self.loss_scaler = loss_scaler
            loss_scaler.scale_value.name = "loss_scale"
            self.loss_scale = loss_scaler.scale_value
            if self.dynamic_scale:
                loss_scaler.counter.name = "loss_scale_counter"
                self.loss_scale_counter = loss_scaler.counter
            differentiated = _ScaledTotal(self.network, self.loss_scale)
        else:
            differentiated = self.network
        self.value_and_grad = ops.value_and_grad(differentiated, None, self.weights, has_aux=True)
        self.grad_reducer = nn.Identity()
        if _data_parallel():
            # mean and degree default to `gradients_mean` and the communication group size
            self.grad_reducer = nn.DistributedGradReducer(self.weights)
        if self.grad_accumulation > 1:
            self.accum_grads = self.weights.clone(prefix="accum_grads", init="zeros")
            self.micro_step = Parameter(Tensor(0, ms.int32), name="micro_step", requires_grad=False)
            self.hyper_map = ops.HyperMap()

    def construct(self, *inputs):
        outputs, grads = self.value_and_grad(*inputs)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        if self.scaled:
            outputs = outputs[1:]  # drop total * scale
            grads = self.loss_scaler.unscale(grads)
        if self.grad_accumulation == 1:
            grads = self.grad_reducer(grads)
            return ops.depend(outputs, self._update(grads))
        return ops.depend(outputs, self._accumulate(grads))

    def _update(self, grads):
        if not self.scaled:
            return self.optimizer(grads)
        # Non-finite gradients (all-reduced first, so every rank decides alike) skip the
        # update, as mindspore.amp's documented training loop and TrainOneStepWithLossScaleCell.
        finite = amp.all_finite(grads)
        if finite:
            finite = ops.depend(finite, self.optimizer(grads))
        else:
            step = self.optimizer.global_step
            finite = ops.depend(finite, ops.assign_add(step, ops.ones_like(step)))
        if self.dynamic_scale:
            finite = ops.depend(finite, self.loss_scaler.adjust(finite))
        return finite

    def _accumulate(self, grads):
        done = self.hyper_map(ops.assign_add, self.accum_grads, grads)
        count = ops.depend(self.micro_step + 1, done)
        ops.assign(self.micro_step, count)
        if count % self.grad_accumulation == 0:
            scale = 1.0 / self.grad_accumulation
            mean_grads = self.hyper_map(ops.partial(_scaled, scale), self.accum_grads)
            mean_grads = self.grad_reducer(mean_grads)
            applied = self._update(mean_grads)
            zeros = self.hyper_map(ops.zeros_like, self.accum_grads)
            cleared = self.hyper_map(ops.assign, self.accum_grads, ops.depend(zeros, applied))
            return ops.depend(count, cleared)
        return count
