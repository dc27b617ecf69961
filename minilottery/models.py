"""The paper's networks: LeNet-300-100, Conv-2, Conv-4, Conv-6 (docs/paper.md §1), and
the deeper nets of its §4, ResNet-20 and VGG-19 (with BatchNorm).

Every builder returns a Sequential (minilottery.containers), initialised as the
paper does (Glorot normal, biases 0; minilottery.init) from ``seed``. What a model
offers the optimizers, pruning and training is the layer protocol of
minilottery.protocol: the walk over nested layers and the named params, grads and
masks it gives ("fc1.W", "stage2.block0.conv1.W").
"""


from .containers import ResidualBlock, Sequential
from .init import initialize
from .layers import Conv2d, Dense, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, ReLU
from .normalization import BatchNorm2d


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



# -- §4: ResNet-20 and VGG-19 -------------------------------------------------------

def _conv_bn_relu(in_ch, out_ch, index, stride=1):
    """conv{index} (3x3, no bias: BatchNorm's shift replaces it), bn{index}, relu{index}."""
    return [Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False, name=f"conv{index}"),
            BatchNorm2d(out_ch, name=f"bn{index}"), ReLU(name=f"relu{index}")]


def basic_block(in_ch, out_ch, stride=1, name="block"):
    """He et al.'s basic block: conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU. Where
    the shape changes the shortcut is a strided 1x1 conv and a BatchNorm."""
    layers = _conv_bn_relu(in_ch, out_ch, 1, stride)[:3] + [
        Conv2d(out_ch, out_ch, 3, padding=1, bias=False, name="conv2"),
        BatchNorm2d(out_ch, name="bn2")]
    shortcut = None
    if stride != 1 or in_ch != out_ch:
        shortcut = Sequential(Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, name="conv"),
                              BatchNorm2d(out_ch, name="bn"))
    return ResidualBlock(*layers, shortcut=shortcut, name=name)


def resnet20(seed=0):
    """ResNet-20 for CIFAR-10 (He et al., 2016, §4.2; the paper's §4 and App I): a 3x3
    conv of 16 channels, three stages of three basic blocks with 16, 32, 64 channels
    (the first block of stages 2 and 3 halves the image with stride 2 and projects its
    shortcut with a 1x1 conv), global average pooling, FC 10. 270,896 weights: 267,696
    in the 3x3 convs, 2,560 in the 1x1 shortcuts, 640 in the output layer.
    Layers: conv1, bn1, relu1, stage1..stage3 (block0..block2), pool, out."""
    layers, in_ch = _conv_bn_relu(3, 16, 1), 16
    for s, width in enumerate((16, 32, 64), start=1):
        blocks = [basic_block(in_ch if b == 0 else width, width, 2 if (b == 0 and s > 1) else 1,
                              f"block{b}") for b in range(3)]
        layers.append(Sequential(*blocks, name=f"stage{s}"))
        in_ch = width
    layers += [GlobalAvgPool2d(name="pool"), Dense(64, 10, name="out")]
    return _finish(layers, seed)


VGG19_WIDTHS = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool",
                512, 512, 512, 512, "pool", 512, 512, 512, 512)


def vgg19(seed=0):
    """VGG-19 for CIFAR-10 as Liu et al. (2019) build it (the paper's §4, App I): sixteen
    3x3 conv-BN-ReLU layers (64, 64, pool, 128, 128, pool, 256 x4, pool, 512 x4, pool,
    512 x4; 2x2 max-pools), then the 2x2 maps averaged and FC 10: 20,018,880 conv weights and 5,120 in the
    output layer."""
    layers, in_ch, c, p = [], 3, 0, 0
    for width in VGG19_WIDTHS:
        if width == "pool":
            p += 1
            layers.append(MaxPool2d(2, name=f"pool{p}"))
        else:
            c += 1
            layers += _conv_bn_relu(in_ch, width, c)
            in_ch = width
    layers += [GlobalAvgPool2d(name="avgpool"), Dense(512, 10, name="out")]
    return _finish(layers, seed)


BUILDERS = {"lenet": lenet300_100, "conv2": conv2, "conv4": conv4, "conv6": conv6,
            "resnet20": resnet20, "vgg19": vgg19}
