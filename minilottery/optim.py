"""Mask-aware optimizers (SGD with momentum, Adam) and learning-rate schedules.

An optimizer walks the model's layers (``minilottery.protocol.walk``, nested or
flat); every layer holds ``params``, ``grads`` and ``masks`` dicts. For each
parameter tensor it runs ONE fused Numba kernel, a single pass over the raveled
tensor that does weight decay, the moment updates, the (bias-corrected) step and
the mask:

    SGD  (momentum mu, weight decay lambda; the PyTorch / Sutskever form)
        g <- g + lambda * w
        v <- mu * v + g
        w <- w - lr * v

    Adam (Kingma & Ba 2015; weight decay as L2 added to the gradient)
        g <- g + lambda * w
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        w <- w - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    where t = iteration + 1 is the number of the step being taken.

Pruning invariant: where a mask is 0 the kernel writes w = 0 and sets that
entry's optimizer state (v, or m and v) to 0, whatever the update would be.
So a pruned weight stays exactly 0 and can never creep back through momentum
or weight decay, whatever its gradient, the learning rate or the decay.
Biases have no mask; the same kernel runs with ``mask=None`` (Numba compiles a
separate, mask-free specialisation of it).

All state is float32, and the scalars (lr, betas, bias corrections) are handed
to the kernels as float32, so the arithmetic stays float32 end to end.

Learning-rate schedules are callables ``iteration -> lr``:

    constant(lr)                            lr(t) = lr
    linear_warmup(lr, k)                    lr(t) = base(t) * min(1, t / k)
    step_decay(lr, milestones, factor=0.1)  lr(t) = base(t) * factor ** #{m in milestones : m <= t}

``lr`` (the base) may itself be a number or a schedule, so they compose; the
warmup factor multiplies whatever the inner schedule gives. VGG-19 with warmup
(Frankle & Carbin 2019, §4 and App. I.2: k = 10,000, lr 0.1 divided by 10 after
epochs 80 and 120 of 703 iterations each) is

    linear_warmup(step_decay(0.1, [56_240, 84_360]), 10_000)

lr(0) = 0, lr(5,000) = 0.05, lr(10,000) = 0.1, lr(56,240) = 0.01, lr(84,360) = 0.001
(up to float rounding: 0.1 * 0.1 = 0.010000000000000002).

Every number is checked when an optimizer or schedule is made, with the rules
of minilottery.checks that Config uses too: a learning rate is finite and > 0
(also once rounded to float32), momentum and betas lie in [0, 1), eps > 0,
weight decay >= 0. A schedule may give 0 at an iteration (warmup at t = 0),
never a negative or infinite rate.

Run with NUMBA_DISABLE_JIT=1 to step through the kernels in plain Python.
"""

import numpy as np
from numba import njit, prange

from . import checks
from . import threads  # noqa: F401  (chooses Numba's threading layer before any kernel runs)
from .protocol import parameters

__all__ = [
    "Optimizer", "SGD", "Adam",
    "Constant", "LinearWarmup", "StepDecay",
    "constant", "linear_warmup", "step_decay",
    "sgd_kernel", "adam_kernel", "sgd_update", "adam_update",
]


# --------------------------------------------------------------------------
# Kernels: one pass over one raveled tensor. mask is a float 0/1 array or None.
# --------------------------------------------------------------------------

# ``sgd_update`` / ``adam_update`` hold the math, one serial pass over a tensor.
# ``sgd_kernel`` / ``adam_kernel`` are what the optimizers call: they split a
# large tensor over threads in fixed chunks (prange). The update is elementwise,
# so every element is computed the same way whatever the thread count and the
# results do not depend on it. Tensors of at most one chunk (biases, small
# layers) are updated serially: waking the thread pool costs tens of
# microseconds, more than the update itself.
#
# Three details keep the inner loop one straight run of SIMD instructions (each
# cost a factor 5-15 when missing):
#   * the mask is applied with a select (``value if keep else 0``), not with a
#     ``continue`` that skips the stores; a select writes +0.0, never -0.0;
#   * the chunks are slices indexed from 0 (indexing whole arrays with
#     ``range(lo, hi)`` makes Numba test for negative indices on every access);
#   * error_model="numpy": a division by zero gives inf/nan as in NumPy rather
#     than raising, so no test per division.

CHUNK = 16384   # elements per parallel task: large enough to amortise handing it out


@njit(cache=True, error_model="numpy")
def sgd_update(w, g, velocity, mask, lr, momentum, weight_decay):
    """In place, for every i: pruned (mask 0) -> w = v = 0; otherwise
    g' = g + weight_decay * w;  v = momentum * v + g';  w -= lr * v."""
    ### BEGIN SOLUTION 3.1
    zero = w.dtype.type(0.0)
    for i in range(w.size):
        gi = g[i] + weight_decay * w[i]
        vi = momentum * velocity[i] + gi
        wi = w[i] - lr * vi
        keep = True if mask is None else mask[i] != 0
        velocity[i] = vi if keep else zero
        w[i] = wi if keep else zero
    ### END SOLUTION


@njit(cache=True, error_model="numpy")
def adam_update(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay,
                bias_correction1, bias_correction2):
    """In place, for every i: pruned (mask 0) -> w = m = v = 0; otherwise
    g' = g + weight_decay * w;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
    w -= lr * (m / bias_correction1) / (sqrt(v / bias_correction2) + eps),
    with bias_correction_k = 1 - b_k^t computed by the caller (float32)."""
    ### BEGIN SOLUTION 3.2
    one = np.float32(1.0)
    zero = w.dtype.type(0.0)
    for i in range(w.size):
        gi = g[i] + weight_decay * w[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m_hat = mi / bias_correction1
        v_hat = vi / bias_correction2
        wi = w[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        keep = True if mask is None else mask[i] != 0
        m[i] = mi if keep else zero
        v[i] = vi if keep else zero
        w[i] = wi if keep else zero
    ### END SOLUTION


@njit(cache=True, parallel=True)
def sgd_kernel(w, g, velocity, mask, lr, momentum, weight_decay):
    """sgd_update on 1-D arrays, in parallel chunks of CHUNK elements."""
    if w.size <= CHUNK:
        sgd_update(w, g, velocity, mask, lr, momentum, weight_decay)
        return
    for chunk in prange((w.size + CHUNK - 1) // CHUNK):
        lo = chunk * CHUNK
        hi = min(w.size, lo + CHUNK)
        sgd_update(w[lo:hi], g[lo:hi], velocity[lo:hi], None if mask is None else mask[lo:hi],
                   lr, momentum, weight_decay)


@njit(cache=True, parallel=True)
def adam_kernel(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay,
                bias_correction1, bias_correction2):
    """adam_update on 1-D arrays, in parallel chunks of CHUNK elements."""
    if w.size <= CHUNK:
        adam_update(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay,
                    bias_correction1, bias_correction2)
        return
    for chunk in prange((w.size + CHUNK - 1) // CHUNK):
        lo = chunk * CHUNK
        hi = min(w.size, lo + CHUNK)
        adam_update(w[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], None if mask is None else mask[lo:hi],
                    lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2)


# --------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------

def _check_lr(lr, what="lr"):
    """A learning rate is a schedule (a callable) or a number (checks.learning_rate)."""
    return lr if callable(lr) else checks.learning_rate(lr, what)


def _evaluate(lr, iteration):
    return float(lr(iteration)) if callable(lr) else lr


class Constant:
    """lr(t) = lr for every iteration t."""

    def __init__(self, lr):
        self.lr = checks.learning_rate(lr, "lr")

    def __call__(self, iteration):
        return self.lr

    def __repr__(self):
        return f"constant({self.lr!r})"


class LinearWarmup:
    """lr(t) = base(t) * min(1, t / k): rises linearly from 0 at t = 0 to the base
    lr at t = k, then follows the base (Frankle & Carbin 2019, §4 and App. I.5;
    k = warmup_iterations).
    base is a number or another schedule."""

    def __init__(self, lr, warmup_iterations):
        self.base = _check_lr(lr)
        self.warmup_iterations = checks.integer(warmup_iterations, "warmup_iterations", low=1)

    def __call__(self, iteration):
        return _evaluate(self.base, iteration) * min(1.0, iteration / self.warmup_iterations)

    def __repr__(self):
        return f"linear_warmup({self.base!r}, {self.warmup_iterations})"


class StepDecay:
    """lr(t) = base(t) * factor ** (number of milestones <= t): with factor 0.1 the lr
    is divided by 10 at each milestone (VGG-19 and Resnet-18: Frankle & Carbin 2019,
    App. I.2 and I.3).
    base is a number or another schedule; milestones strictly increasing ints >= 1."""

    def __init__(self, lr, milestones, factor=0.1):
        self.base = _check_lr(lr)
        milestones = [checks.integer(ms, f"milestones[{i}]", low=1) for i, ms in enumerate(milestones)]
        if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones!r}")
        self.milestones = milestones
        self.factor = checks.real(factor, "factor", low=0.0, low_open=True)

    def __call__(self, iteration):
        passed = sum(1 for ms in self.milestones if ms <= iteration)
        return _evaluate(self.base, iteration) * self.factor ** passed

    def __repr__(self):
        return f"step_decay({self.base!r}, {self.milestones!r}, factor={self.factor!r})"


# Lower-case spellings, for schedules written as formulas: linear_warmup(step_decay(...), k).
constant = Constant
linear_warmup = LinearWarmup
step_decay = StepDecay


# --------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------

class Optimizer:
    """Shared bookkeeping: the lr (number or schedule), the iteration counter, the
    walk over the model's parameters, and float32 state per parameter.

    Parameters are named by their dotted path, "fc1.W" or "stage2.block0.conv1.W", as
    the walk of minilottery.protocol names them (a layer without a name in a plain
    ``.layers`` list is named by its index). Subclasses list their state buffers in
    STATE and implement _update(param, grad, state, mask, lr)."""

    STATE = ()

    def __init__(self, model, lr, weight_decay=0.0):
        if not (hasattr(model, "layers") or hasattr(model, "children")):
            raise ValueError(f"model must be a layer or container (with .children() or .layers), "
                             f"got {type(model).__name__}")
        self.model = model
        self.lr = _check_lr(lr)
        self.weight_decay = checks.real(weight_decay, "weight_decay", low=0.0, float32=True)
        self.iteration = 0
        self.state = {name: {key: np.zeros(p.shape, np.float32) for key in self.STATE}
                      for name, p, _, _ in self._parameters()}

    def _parameters(self):
        """Yield (name, param, grad, mask or None) for every parameter, after checking
        that param and grad are float32 of the same shape, mask (if any) too."""
        for name, layer, key in parameters(self.model):
            param, grad, mask = layer.params[key], layer.grads.get(key), layer.masks.get(key)
            if param.dtype != np.float32 or not param.flags.c_contiguous:
                raise ValueError(f"param {name} must be a C-contiguous float32 array, "
                                 f"got dtype {param.dtype}")
            if grad is None or grad.shape != param.shape or grad.dtype != np.float32:
                got = None if grad is None else (grad.shape, str(grad.dtype))
                raise ValueError(f"grad of {name} must be float32 of shape {param.shape}, "
                                 f"got {got}")
            if mask is not None and mask.shape != param.shape:
                raise ValueError(f"mask of {name} must have shape {param.shape}, "
                                 f"got {mask.shape}")
            yield name, param, grad, mask

    def lr_now(self):
        """The learning rate of the next step: lr, or lr(iteration) for a schedule."""
        return checks.real(_evaluate(self.lr, self.iteration),
                           f"the lr that schedule {self.lr!r} gives at iteration {self.iteration}",
                           low=0.0, float32=True)

    def step(self):
        """Update every parameter from its gradient, then iteration += 1."""
        lr = np.float32(self.lr_now())
        for name, param, grad, mask in self._parameters():
            state = self.state.get(name)
            if state is None:     # a parameter the model gained after construction
                state = self.state[name] = {key: np.zeros(param.shape, np.float32)
                                            for key in self.STATE}
            for key, buf in state.items():
                if buf.shape != param.shape:
                    raise ValueError(f"optimizer state {key!r} of {name} has shape {buf.shape}, "
                                     f"but the param now has shape {param.shape}")
            self._update(param.reshape(-1), np.ravel(grad),
                         {key: buf.reshape(-1) for key, buf in state.items()},
                         None if mask is None else np.ravel(mask), lr)
        self.iteration += 1

    def _update(self, param, grad, state, mask, lr):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay:
    g' = g + weight_decay * w;  v = momentum * v + g';  w -= lr * v.
    momentum 0 is plain SGD (v is then just g'). Pruned weights stay exactly 0."""

    STATE = ("velocity",)

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0):
        self.momentum = checks.real(momentum, "momentum", low=0.0, high=1.0, high_open=True,
                                    float32=True)
        super().__init__(model, lr, weight_decay)

    def _update(self, param, grad, state, mask, lr):
        sgd_kernel(param, grad, state["velocity"], mask, lr,
                   np.float32(self.momentum), np.float32(self.weight_decay))


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay added to the gradient
    (not decoupled AdamW); formulas in the module docstring. Pruned weights and
    their m, v stay exactly 0."""

    STATE = ("m", "v")

    def __init__(self, model, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(checks.real(beta, f"betas[{i}]", low=0.0, high=1.0, high_open=True,
                                       float32=True) for i, beta in enumerate(betas))
        self.eps = checks.real(eps, "eps", low=0.0, low_open=True, float32=True)
        super().__init__(model, lr, weight_decay)

    def step(self):
        t = self.iteration + 1   # the step being taken, counted from 1
        # 1 - beta^t from the float32 betas the kernel uses, so that at t = 1 the
        # corrected moments are exactly g and g^2 (up to float32 rounding).
        beta1, beta2 = (float(np.float32(beta)) for beta in self.betas)
        self._bias_corrections = (np.float32(1.0 - beta1 ** t), np.float32(1.0 - beta2 ** t))
        super().step()

    def _update(self, param, grad, state, mask, lr):
        beta1, beta2 = self.betas
        bc1, bc2 = self._bias_corrections
        adam_kernel(param, grad, state["m"], state["v"], mask, lr,
                    np.float32(beta1), np.float32(beta2), np.float32(self.eps),
                    np.float32(self.weight_decay), bc1, bc2)
