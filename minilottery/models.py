"""Sequential models and the paper's networks: LeNet-300-100, Conv-2, Conv-4, Conv-6
(docs/paper.md §1).

A Sequential runs its layers in order forward and in reverse order backward.

The model protocol. What the optimizers (minilottery.optim), the initialiser
(minilottery.init), pruning (minilottery.pruning) and training rely on, and all
they rely on, so that a stand-in with these attributes (as in the tests) works
with them too:

    model.layers         the layers in forward order
    layer.name           a str, unique in the model, without "."
    layer.params         dict key -> float32 array ({} for a layer without weights)
    layer.grads          the same keys and shapes; backward() overwrites them in
                         place, so a reference taken once stays valid
    layer.masks          dict for the prunable keys only (weights, never biases):
                         float32, the param's shape, 1 = kept, 0 = pruned
    model.named_params(), named_grads(), named_masks()
                         dicts "layer.key" -> the live arrays above (e.g. "fc1.W"),
                         in layer order; pruning reads and returns such dicts

The invariant: a pruned weight is exactly 0 (param == 0 where mask == 0).
set_masks, load_state_dict and pruning.reset_to establish it, the optimizers keep
it, and backward gives a pruned weight exactly zero gradient. The layer side of
the protocol (forward, backward, dtypes) is described in minilottery.layers.
"""

import numpy as np

from .init import initialize
from .layers import Conv2d, Dense, Dropout, Flatten, MaxPool2d, ReLU, real_array


class Sequential:
    """A stack of layers: forward(x) = layer_n(...layer_1(x)); backward runs in reverse.

    Unnamed layers are named f"{class name in lower case}{index}" (index = position).
    Names must be unique and must not contain ".".
    """

    def __init__(self, *layers):
        names = [f"{type(layer).__name__.lower()}{index}" if layer.name is None else layer.name
                 for index, layer in enumerate(layers)]
        for index, name in enumerate(names):     # all checked before any layer is renamed
            if "." in name:
                raise ValueError(f"Sequential: layer name {name!r} must not contain '.'")
            if name in names[:index]:
                raise ValueError(f"Sequential: duplicate layer name {name!r}")
        for layer, name in zip(layers, names):
            layer.name = name
        self.layers = list(layers)

    def _fuses_relu(self, index):
        """True when layer `index` is a Conv2d directly followed by a ReLU. Such a pair runs
        as one pass, Conv2d.forward(x, relu=True): the bias, the ReLU and the move to NCHW
        share one trip over memory (and backward the ReLU's mask joins the reverse move).
        The ReLU layer itself is then skipped; the result is the same, bit for bit."""
        return (isinstance(self.layers[index], Conv2d) and index + 1 < len(self.layers)
                and type(self.layers[index + 1]) is ReLU)

    def forward(self, x, training=True):
        index = 0
        while index < len(self.layers):
            if self._fuses_relu(index):
                x = self.layers[index].forward(x, training, relu=True)
                index += 2
            else:
                x = self.layers[index].forward(x, training)
                index += 1
        return x

    __call__ = forward

    def backward(self, dout, input_grad=True):
        """Backpropagate dL/doutput through every layer; fills each layer's grads; returns dL/dx.

        With ``input_grad=False`` (what training uses) the backward pass stops at the
        first layer with parameters: it fills that layer's grads without computing its
        dx, the layers before it (e.g. LeNet's Flatten) are skipped, and None is returned.
        A ReLU fused into the Conv2d before it (see _fuses_relu) is done by that Conv2d.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if index > 0 and self._fuses_relu(index - 1):
                continue
            if input_grad or index > first:
                dout = layer.backward(dout)
            else:
                return layer.backward(dout, input_grad=False) if layer.params else None
        return dout

    def __getitem__(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"Sequential has no layer named {name!r}")

    # -- named views --------------------------------------------------------------

    def named_params(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.params.items()}

    def named_grads(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.grads.items()}

    def named_masks(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.masks.items()}

    def count_weights(self):
        """Number of prunable weights (the paper's denominator: W only, no biases)."""
        return sum(int(m.size) for m in self.named_masks().values())

    # -- masks and state ----------------------------------------------------------

    @staticmethod
    def _checked(what, value, expected_shape, zero_one=False):
        """value as a fresh float32 array, after checking that it holds finite real numbers
        of the expected shape (and, with ``zero_one``, only 0s and 1s)."""
        array = real_array(value, what)
        if array.shape != expected_shape:
            raise ValueError(f"{what}: expected shape {expected_shape}, got {array.shape}")
        if zero_one and not np.all((array == 0) | (array == 1)):    # before rounding to float32
            raise ValueError(f"{what}: values must be 0 or 1")
        with np.errstate(over="ignore"):
            array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what}: values must be finite in float32 (found NaN or ±inf)")
        return array

    def set_masks(self, masks):
        """Install masks (a dict name -> 0/1 array, some or all prunable params) and zero the
        pruned weights (W *= mask). Everything is validated before anything changes."""
        own = self.named_masks()
        unknown = sorted(set(masks) - set(own))
        if unknown:
            raise ValueError(f"set_masks: unknown mask names {unknown}; prunable params are {list(own)}")
        checked = {name: self._checked(f"mask {name!r}", m, own[name].shape, zero_one=True)
                   for name, m in masks.items()}
        params = self.named_params()
        for name, mask in checked.items():
            own[name][...] = mask
            params[name] *= own[name]

    def state_dict(self):
        """{"params": {name: copy}, "masks": {name: copy}}."""
        return {"params": {k: v.copy() for k, v in self.named_params().items()},
                "masks": {k: v.copy() for k, v in self.named_masks().items()}}

    def load_state_dict(self, state):
        """Copy params and masks in from a state_dict(). Validated completely before
        anything is written, so a rejected state leaves the model as it was:

        - state is {"params": {...}, "masks": {...}} and the names match the model's exactly;
        - every value is an array of real numbers (bool, integer or float; not strings,
          objects or complex numbers) of the param's shape;
        - every value is finite once cast to float32 (NaN or ±inf in a checkpoint means it
          is corrupt, and a NaN weight would spread to every output);
        - masks hold only 0 and 1, and every masked-out weight is 0.
        """
        checked = self._checked_state(state)
        for part, own in (("params", self.named_params()), ("masks", self.named_masks())):
            for name, value in checked[part].items():
                own[name][...] = value

    def _checked_state(self, state):
        """The state's arrays as float32 copies, once every rule of load_state_dict holds."""
        if not isinstance(state, dict) or set(state) != {"params", "masks"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict: expected a dict with keys 'params' and 'masks', got {got}")
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
            checked[part] = {name: self._checked(f"load_state_dict: {part} {name!r}", state[part][name],
                                                 own[name].shape, zero_one=part == "masks")
                             for name in own}
        for name, mask in checked["masks"].items():
            if np.any(checked["params"][name][mask == 0] != 0):
                raise ValueError(f"load_state_dict: {name!r} has nonzero weights where its mask is 0")
        return checked

    def reseed_dropout(self, seed):
        """Reseed every Dropout layer; layer i gets the seed sequence (seed, i)."""
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.reseed(np.random.SeedSequence([seed, index]))

    def __repr__(self):
        inner = "\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)"


# -- the paper's networks ------------------------------------------------------------

def _fc_head(in_features, dropout, first_relu_index):
    """FC 256, 256, 10 with ReLU after each hidden layer (and Dropout after it if dropout > 0)."""
    layers, r = [], first_relu_index
    for i, (fan_in, fan_out) in enumerate([(in_features, 256), (256, 256)], start=1):
        layers += [Dense(fan_in, fan_out, name=f"fc{i}"), ReLU(name=f"relu{r}")]
        r += 1
        if dropout > 0:
            layers.append(Dropout(dropout, name=f"dropout{i}"))
    layers.append(Dense(256, 10, name="out"))
    return layers


def _finish(layers, seed):
    model = Sequential(*layers)
    initialize(model, seed)
    model.reseed_dropout(seed)
    return model


def lenet300_100(seed=0):
    """LeNet-300-100 for MNIST (input (N, 1, 28, 28)): Flatten, FC 300, FC 100, FC 10,
    ReLU after the hidden layers. 266,200 weights. Layers: flatten, fc1, relu1, fc2, relu2, out."""
    return _finish([Flatten(name="flatten"),
                    Dense(784, 300, name="fc1"), ReLU(name="relu1"),
                    Dense(300, 100, name="fc2"), ReLU(name="relu2"),
                    Dense(100, 10, name="out")], seed)


def _conv_net(widths, seed, dropout):
    """Modules of two 3x3 'same' convs (+ReLU) and a 2x2 max-pool, then FC 256, 256, 10."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers, in_ch, size, c = [], 3, 32, 0
    for m, width in enumerate(widths, start=1):
        for _ in range(2):
            c += 1
            layers += [Conv2d(in_ch, width, 3, padding=1, name=f"conv{c}"), ReLU(name=f"relu{c}")]
            in_ch = width
        layers.append(MaxPool2d(2, name=f"pool{m}"))
        size //= 2
    layers.append(Flatten(name="flatten"))
    layers += _fc_head(in_ch * size * size, dropout, first_relu_index=c + 1)
    return _finish(layers, seed)


_DROPOUT_DOC = """
    dropout: rate p of the paper's dropout variants (§3, App H.5 use 0.5). The paper does not
    say which layers get dropout; we put a Dropout after the ReLU of each hidden FC layer
    (fc1, fc2), none in the conv layers and none before the output layer."""


def conv2(seed=0, dropout=0.0):
    return _conv_net([64], seed, dropout)


def conv4(seed=0, dropout=0.0):
    return _conv_net([64, 128], seed, dropout)


def conv6(seed=0, dropout=0.0):
    return _conv_net([64, 128, 256], seed, dropout)


conv2.__doc__ = """Conv-2 for CIFAR-10 (input (N, 3, 32, 32)): conv 64, 64, pool, FC 256, 256, 10.
    4,300,992 weights (38,592 conv). Layers: conv1, relu1, conv2, relu2, pool1, flatten,
    fc1, relu3, fc2, relu4, out.""" + _DROPOUT_DOC
conv4.__doc__ = """Conv-4 for CIFAR-10: conv 64, 64, pool, 128, 128, pool, FC 256, 256, 10.
    2,425,024 weights (259,776 conv).""" + _DROPOUT_DOC
conv6.__doc__ = """Conv-6 for CIFAR-10: conv 64, 64, pool, 128, 128, pool, 256, 256, pool, FC 256, 256, 10.
    2,261,184 weights (1,144,512 conv). The paper's Fig 2 table says 1.7M weights for
    Conv-6, but the architecture it describes (§3, App H.1) has 2,261,184: the flattened
    4*4*256 = 4096 features give fc1 alone 1,048,576 weights. We build the described
    architecture.""" + _DROPOUT_DOC

BUILDERS = {"lenet": lenet300_100, "conv2": conv2, "conv4": conv4, "conv6": conv6}
