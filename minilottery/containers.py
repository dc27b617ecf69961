"""Containers: layers made of layers. Sequential runs its layers in order; a residual
block adds its input (or a projection of it) to what its layers make of it.

Containers nest (``minilottery.protocol``): a ResNet is a Sequential of stages, a
stage a Sequential of residual blocks, a block its convolutions, BatchNorms and a
shortcut. A parameter's name is its dotted path, e.g. "stage2.block0.conv1.W".
"""

import numpy as np

from . import kernels
from .layers import Conv2d, Dropout, ReLU
from .normalization import BatchNorm2d
from .protocol import Layer, children, walk


class Sequential(Layer):
    """A stack of layers: forward(x) = layer_n(...layer_1(x)); backward runs in reverse.

    Unnamed layers are named f"{class name in lower case}{index}" (index = position).
    Names must be unique and must not contain ".".
    """

    def __init__(self, *layers, name=None):
        super().__init__(name=name)
        names = [f"{type(layer).__name__.lower()}{index}" if layer.name is None else layer.name
                 for index, layer in enumerate(layers)]
        for index, layer_name in enumerate(names):     # all checked before any layer is renamed
            if "." in layer_name:
                raise ValueError(f"{self.describe()}: layer name {layer_name!r} must not contain '.'")
            if layer_name in names[:index]:
                raise ValueError(f"{self.describe()}: duplicate layer name {layer_name!r}")
        for layer, layer_name in zip(layers, names):
            layer.name = layer_name
        self.layers = list(layers)

    def children(self):
        return {layer.name: layer for layer in self.layers}

    def _fuses_relu(self, index):
        """True when layer `index` is a Conv2d or a BatchNorm2d directly followed by a ReLU.
        Such a pair runs as one pass, forward(x, relu=True): for a Conv2d the bias, the ReLU
        and the move to NCHW share one trip over memory, for a BatchNorm2d the affine map
        and the ReLU (and backward the ReLU's mask joins the first pass). The ReLU layer
        itself is then skipped; the result is the same, bit for bit."""
        return (isinstance(self.layers[index], (Conv2d, BatchNorm2d))
                and index + 1 < len(self.layers) and type(self.layers[index + 1]) is ReLU)

    def _folds_batchnorm(self, index):
        """True when layer `index` is a Conv2d directly followed by a BatchNorm2d (and the
        BatchNorm's statistics are fixed: evaluation). In evaluation the pair runs as one
        convolution with folded weights (Conv2d.folded_with), and a ReLU after them joins
        it: one pass instead of three. The result equals the unfolded one to float32
        round-off, not bit for bit."""
        return (isinstance(self.layers[index], Conv2d) and index + 1 < len(self.layers)
                and type(self.layers[index + 1]) is BatchNorm2d)

    def forward(self, x, training=True):
        index = 0
        while index < len(self.layers):
            if not training and self._folds_batchnorm(index):
                conv, bn = self.layers[index], self.layers[index + 1]
                relu = index + 2 < len(self.layers) and type(self.layers[index + 2]) is ReLU
                x = conv.forward(x, False, relu=relu, weights=conv.folded_with(bn))
                index += 3 if relu else 2
            elif self._fuses_relu(index):
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
        first = next((i for i, layer in enumerate(self.layers) if layer.has_params()), 0)
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if index > 0 and self._fuses_relu(index - 1):
                continue
            if input_grad or index > first:
                dout = layer.backward(dout)
            else:
                return layer.backward(dout, input_grad=False) if layer.has_params() else None
        return dout

    def __getitem__(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.describe()} has no layer named {name!r}")

    def reseed_dropout(self, seed):
        """Reseed every Dropout layer inside: the one at child positions (i, j, ...) gets the
        seed sequence (seed, i, j, ...); in a flat model, layer i gets (seed, i)."""
        positions = {"": ()}
        for path, layer in walk(self):
            for index, child_name in enumerate(children(layer)):
                positions[f"{path}.{child_name}" if path else child_name] = positions[path] + (index,)
            if isinstance(layer, Dropout):
                layer.reseed(np.random.SeedSequence([seed, *positions[path]]))

    def __repr__(self, indent="  "):
        inner = "\n".join(indent + (layer.__repr__(indent + "  ") if isinstance(layer, Sequential)
                                    else repr(layer)) for layer in self.layers)
        return f"{type(self).__name__}(\n{inner}\n{indent[:-2]})"


class ResidualBlock(Sequential):
    """y = max(F(x) + S(x), 0), He et al. (2016): F runs the block's layers in order (for
    ResNet-20: conv1, bn1, relu1, conv2, bn2), S is the shortcut: the identity, or a
    projection (a Sequential, e.g. a strided 1x1 Conv2d and a BatchNorm2d) where F
    changes the shape.

    Backward, with g = dout where y > 0, else 0:  dx = dF/dx^T g + dS/dx^T g
    (dS/dx^T g = g for the identity), and both F's and S's parameters get their grads
    from the same g.
    """

    def __init__(self, *layers, shortcut=None, name=None):
        super().__init__(*layers, name=name)
        if shortcut is not None:
            if any(layer.name == "shortcut" for layer in self.layers):
                raise ValueError(f"{self.describe()}: the name 'shortcut' is the shortcut's")
            shortcut.name = "shortcut"
        self.shortcut = shortcut

    def children(self):
        inner = super().children()
        if self.shortcut is not None:
            inner["shortcut"] = self.shortcut
        return inner

    def forward(self, x, training=True):
        residual = super().forward(x, training)
        identity = x if self.shortcut is None else self.shortcut.forward(x, training)
        if residual.shape != np.shape(identity):
            raise self._bad_shape("shortcut output", residual.shape, np.shape(identity))
        y = np.maximum(residual + identity, 0)
        self._saved = y if training else None
        return y

    def backward(self, dout, input_grad=True):
        y = self._take_saved()
        dout = np.ascontiguousarray(self._check_dout(dout, y.shape), dtype=y.dtype)
        g = np.empty_like(y)
        kernels.relu_backward(dout.reshape(1, -1), y.reshape(1, -1), g.reshape(1, -1))
        dx = super().backward(g, input_grad)
        if self.shortcut is None:
            return dx + g if input_grad else None
        d_shortcut = self.shortcut.backward(g, input_grad)
        return dx + d_shortcut if input_grad else None
