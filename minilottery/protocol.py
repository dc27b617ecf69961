"""The layer protocol: what every layer, and every container of layers, has.

A layer holds

    params  dict key -> float32 array ({} for a layer without weights)
    grads   the same keys and shapes; backward() OVERWRITES them in place, so a
            reference taken once stays valid
    masks   dict for the prunable keys only (weights, never biases or BatchNorm's
            scale and shift): float32, the param's shape, 1 = kept, 0 = pruned
    inits   dict key -> how ``minilottery.init`` draws that param: "glorot",
            "zeros" or "ones"

and, if it keeps state that is not a parameter (BatchNorm's running statistics,
Dropout's random generator), ``own_state()`` and ``load_own_state(state)``.

Containers nest. A container (Sequential, a residual block) is a layer whose
``children()`` are layers or containers, by name. ``walk(model)`` visits every layer
depth first, in forward order, with its dotted path: "stage2.block0.conv1". Every
named view comes from that one walk: ``named_params()`` is {"path.key": array}, e.g.
"stage2.block0.conv1.W" (or "fc1.W" in a flat net), and so are ``named_grads()`` and
``named_masks()``. The optimizers, the initialiser, pruning, ``state_dict`` and the
checkpoints all use them, so a parameter has the same name everywhere.

The invariant: a pruned weight is exactly 0 (param == 0 where mask == 0).
``set_masks``, ``load_state_dict`` and ``pruning.reset_to`` establish it, the
optimizers keep it, and backward gives a pruned weight exactly zero gradient.
"""

import numpy as np

INITIALIZERS = ("glorot", "zeros", "ones")


def real_array(value, what):
    """`value` as an ndarray of real numbers (bool, integer or float), the values a
    float32 parameter or mask can take. TypeError naming `what` for anything else:
    strings, objects, complex numbers, ragged nested lists."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:            # e.g. ragged nested lists
        raise TypeError(f"{what}: expected an array of real numbers, got {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected an array of real numbers, got dtype {array.dtype}")
    return array


def children(layer):
    """The layers directly inside `layer`, {name: layer}, in forward order. A stand-in
    object with only a ``.layers`` list counts as a container; its layers are named by
    their ``name`` or, without one, by their index."""
    if hasattr(layer, "children"):
        return layer.children()
    if hasattr(layer, "layers"):
        return {getattr(child, "name", None) or str(index): child
                for index, child in enumerate(layer.layers)}
    return {}


def walk(layer, prefix=""):
    """Yield (path, layer) for `layer` and every layer inside it, depth first in forward
    order. The path is the dotted chain of names below `layer` ("" for itself)."""
    yield prefix, layer
    for name, child in children(layer).items():
        yield from walk(child, f"{prefix}.{name}" if prefix else name)


def parameters(layer):
    """Yield (name, layer, key) for every parameter in walk(layer), e.g.
    ("stage2.block0.conv1.W", that Conv2d, "W"): the one walk the optimizers, the
    initialiser and pruning go through."""
    for path, inner in walk(layer):
        for key in getattr(inner, "params", {}):
            yield (f"{path}.{key}" if path else key), inner, key


def named(layer, part):
    """{"path.key": array} of ``part`` ("params", "grads" or "masks") of every layer in
    walk(layer): the live arrays, not copies."""
    return {f"{path}.{key}" if path else key: array
            for path, inner in walk(layer) for key, array in getattr(inner, part, {}).items()}


def _checked(what, value, expected_shape, zero_one=False):
    """value as a fresh float32 array, after checking that it holds finite real numbers
    of the expected shape (and, with ``zero_one``, only 0s and 1s)."""
    array = real_array(value, what)
    if array.shape != tuple(expected_shape):
        raise ValueError(f"{what}: expected shape {tuple(expected_shape)}, got {array.shape}")
    if zero_one and not np.all((array == 0) | (array == 1)):    # before rounding to float32
        raise ValueError(f"{what}: values must be 0 or 1")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: values must be finite in float32 (found NaN or ±inf)")
    return array


class Layer:
    """Base class of layers and containers: names, params/grads/masks/inits, the named
    views, masks and state dicts, shape checks, scratch buffers."""

    def __init__(self, *, name=None):
        self.name = name
        self.params = {}
        self.grads = {}
        self.masks = {}
        self.inits = {}
        self._saved = None       # what forward(training=True) keeps for backward
        self._buffers = {}       # reusable scratch arrays, by purpose

    def forward(self, x, training=True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, training=True):
        return self.forward(x, training)

    # -- nesting and named views ----------------------------------------------------

    def children(self):
        """The layers directly inside this one, {name: layer}; a leaf layer has none."""
        return {}

    def named_params(self):
        return named(self, "params")

    def named_grads(self):
        return named(self, "grads")

    def named_masks(self):
        return named(self, "masks")

    def has_params(self):
        return any(inner.params for _, inner in walk(self))

    def count_weights(self):
        """Number of prunable weights (the paper's denominator: weights only, no biases,
        no BatchNorm scales and shifts)."""
        return sum(int(m.size) for m in self.named_masks().values())

    # -- state other than parameters ------------------------------------------------

    def own_state(self):
        """This layer's state that is not a parameter: {} here; e.g. BatchNorm's running
        statistics. Copies, so the caller may keep them."""
        return {}

    def check_own_state(self, state):
        """Raise ValueError, naming the layer, unless load_own_state(state) would succeed."""
        if state:
            raise ValueError(f"{self.describe()}: keeps no state, got {sorted(state)}")

    def load_own_state(self, state):
        """Restore what own_state() returned (after check_own_state)."""
        self.check_own_state(state)

    # -- masks and state dicts ------------------------------------------------------

    def set_masks(self, masks):
        """Install masks (a dict name -> 0/1 array, some or all prunable params) and zero the
        pruned weights (W *= mask). Everything is validated before anything changes."""
        own = self.named_masks()
        unknown = sorted(set(masks) - set(own))
        if unknown:
            raise ValueError(f"set_masks: unknown mask names {unknown}; prunable params are {list(own)}")
        checked = {name: _checked(f"mask {name!r}", m, own[name].shape, zero_one=True)
                   for name, m in masks.items()}
        params = self.named_params()
        for name, mask in checked.items():
            own[name][...] = mask
            params[name] *= own[name]

    def state_dict(self):
        """{"params": {name: copy}, "masks": {name: copy}}, and, when some layer inside
        keeps state that is not a parameter, "state": {layer path: its own_state()}."""
        state = {"params": {k: v.copy() for k, v in self.named_params().items()},
                 "masks": {k: v.copy() for k, v in self.named_masks().items()}}
        layer_states = {path: inner.own_state() for path, inner in walk(self) if inner.own_state()}
        if layer_states:
            state["state"] = layer_states
        return state

    def load_state_dict(self, state):
        """Copy params and masks (and the layers' own state, if given) in from a
        state_dict(). Validated completely before anything is written, so a rejected state
        leaves the model as it was:

        - state has keys "params" and "masks" (and optionally "state"), and the names
          match the model's exactly;
        - every value is an array of real numbers (bool, integer or float; not strings,
          objects or complex numbers) of the param's shape;
        - every value is finite once cast to float32 (NaN or ±inf in a checkpoint means it
          is corrupt, and a NaN weight would spread to every output);
        - masks hold only 0 and 1, and every masked-out weight is 0;
        - "state" names exactly the layers that keep state, and each layer accepts its own.
        """
        checked = self._checked_state(state)
        layers = dict(walk(self))
        for path, layer_state in state.get("state", {}).items():
            layers[path].check_own_state(layer_state)
        for part, own in (("params", self.named_params()), ("masks", self.named_masks())):
            for name, value in checked[part].items():
                own[name][...] = value
        for path, layer_state in state.get("state", {}).items():
            layers[path].load_own_state(layer_state)

    def _checked_state(self, state):
        """The state's arrays as float32 copies, once every rule of load_state_dict holds."""
        if not isinstance(state, dict) or not {"params", "masks"} <= set(state) <= {"params", "masks", "state"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict: expected a dict with keys 'params' and 'masks' "
                             f"(and optionally 'state'), got {got}")
        checked = {}
        for part, own in (("params", self.named_params()), ("masks", self.named_masks())):
            if not isinstance(state[part], dict):
                raise ValueError(f"load_state_dict: {part} must be a dict name -> array, "
                                 f"got {type(state[part]).__name__}")
            missing = sorted(set(own) - set(state[part]))
            unexpected = sorted(set(state[part]) - set(own))
            if missing or unexpected:
                raise ValueError(f"load_state_dict: {part} names differ: missing {missing}, "
                                 f"unexpected {unexpected}")
            checked[part] = {name: _checked(f"load_state_dict: {part} {name!r}", state[part][name],
                                            own[name].shape, zero_one=part == "masks")
                             for name in own}
        for name, mask in checked["masks"].items():
            if np.any(checked["params"][name][mask == 0] != 0):
                raise ValueError(f"load_state_dict: {name!r} has nonzero weights where its mask is 0")
        if "state" in state:
            stateful = {path for path, inner in walk(self) if inner.own_state()}
            given = state["state"]
            if not isinstance(given, dict) or set(given) != stateful:
                got = sorted(given) if isinstance(given, dict) else type(given).__name__
                raise ValueError(f"load_state_dict: 'state' must name the layers that keep state, "
                                 f"{sorted(stateful)}; got {got}")
        return checked

    # -- helpers shared by the layers -----------------------------------------------

    def _add_param(self, key, shape, *, prunable, init):
        """Create a zero-filled float32 param and its grad, declare how it is initialised
        (one of INITIALIZERS), and if prunable give it an all-ones mask."""
        if init not in INITIALIZERS:
            raise ValueError(f"{self.describe()}: unknown initialiser {init!r} for {key!r}; "
                             f"expected one of {INITIALIZERS}")
        self.params[key] = np.zeros(shape, dtype=np.float32)
        self.grads[key] = np.zeros(shape, dtype=np.float32)
        self.inits[key] = init
        if prunable:
            self.masks[key] = np.ones(shape, dtype=np.float32)

    def describe(self):
        """How errors name this layer, e.g. "Conv2d 'conv1'"."""
        cls = type(self).__name__
        return f"{cls} {self.name!r}" if self.name else cls

    def _bad_shape(self, what, expected, actual):
        return ValueError(f"{self.describe()}: expected {what} of shape {expected}, got {tuple(actual)}")

    def _check_dout(self, dout, expected_shape):
        dout = np.asarray(dout)
        if dout.shape != tuple(expected_shape):
            raise self._bad_shape("dout", tuple(expected_shape), dout.shape)
        return dout

    def _zero_grads(self):
        """What backward leaves on an empty batch: every gradient is a sum over no examples."""
        for grad in self.grads.values():
            grad[...] = 0

    def _take_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{self.describe()}: backward() needs a preceding forward(x, training=True)")
        return self._saved

    def _buffer(self, purpose, shape, dtype):
        """A scratch array of at least this size, reused while it is large enough."""
        size = int(np.prod(shape))
        buf = self._buffers.get(purpose)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(size, dtype=dtype)
            self._buffers[purpose] = buf
        return buf[:size].reshape(shape)

    def __repr__(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}(name={self.name!r}{', ' + shapes if shapes else ''})"
