"""What an experiment is: the net, its training schedule, its pruning rates, its controls.

``PAPER`` holds Frankle & Carbin's settings (Fig. 2 table, App. G/H; see
PAPER.md in the design notes), ``QUICK`` the laptop defaults that
``python -m minilottery.run NET`` uses: shorter schedules chosen to finish in
minutes on two cores and still show the paper's effect. ``make_config``
merges a preset with user overrides and validates the result before any
training starts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

# net name -> (builder in minilottery.models.BUILDERS, dropout rate, dataset)
NETS = {
    "lenet": ("lenet", 0.0, "mnist"),
    "conv2": ("conv2", 0.0, "cifar10"),
    "conv4": ("conv4", 0.0, "cifar10"),
    "conv6": ("conv6", 0.0, "cifar10"),
    "conv2-dropout": ("conv2", 0.5, "cifar10"),
    "conv4-dropout": ("conv4", 0.5, "cifar10"),
    "conv6-dropout": ("conv6", 0.5, "cifar10"),
}

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Config:
    """Every setting of one lottery experiment (stored as config.json in the run)."""

    net: str
    iterations: int              # training budget per level, in minibatches
    batch_size: int
    lr: float
    fc_rate: float               # fraction of surviving fc weights pruned per round
    conv_rate: float             # the same for conv layers (unused by LeNet)
    output_rate: float           # the output layer ("out"): half the fc rate in the paper
    rounds: int                  # pruning rounds; levels 0 (dense) .. rounds
    optimizer: str = "adam"
    momentum: float = 0.0        # SGD only
    trials: int = 1              # independent initialisations (paper: 5)
    reinits: int = 1             # random-reinit controls per trial and level (paper: 3)
    random_prunes: int = 1       # random-pruning controls per trial and level
    seed: int = 0
    eval_every: int = 100        # paper: validation and test every 100 iterations
    eval_batch_size: int = 500   # evaluation chunk: bounds memory, not results
    rewind_iteration: int = 0    # 0: reset to theta_0 (the paper); k > 0: rewind to theta_k
    one_shot: bool = False       # prune the dense net once to each level's size
    layer_rates: dict = field(default_factory=dict)  # per-layer overrides {"fc1": 0.3}
    val_size: int = 5000         # held out of the training set with a fixed seed
    val_seed: int = 0

    @property
    def builder(self):
        return NETS[self.net][0]

    @property
    def dropout(self):
        return NETS[self.net][1]

    @property
    def dataset(self):
        return NETS[self.net][2]

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text):
        fields = {f.name for f in dataclasses.fields(cls)}
        values = json.loads(text)
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"config.json: unknown settings {sorted(unknown)}")
        return cls(**values)

    def validate(self):
        """Raise ValueError naming the first bad setting (before any training)."""
        if self.net not in NETS:
            raise ValueError(f"unknown net {self.net!r}; choose from {', '.join(NETS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        for name in ("iterations", "batch_size", "trials", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("rounds", "reinits", "random_prunes", "rewind_iteration", "val_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        rates = {"fc_rate": self.fc_rate, "conv_rate": self.conv_rate,
                 "output_rate": self.output_rate}
        rates.update({f"layer_rates[{k!r}]": v for k, v in self.layer_rates.items()})
        for name, rate in rates.items():
            if not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if self.rewind_iteration > self.iterations:
            raise ValueError(f"rewind_iteration {self.rewind_iteration} is beyond the "
                             f"training budget of {self.iterations} iterations")


def _paper(iterations, lr, conv=0.0, fc=0.2, rounds=20, eval_batch_size=100):
    return dict(iterations=iterations, batch_size=60, lr=lr, fc_rate=fc, conv_rate=conv,
                output_rate=fc / 2, rounds=rounds, trials=5, reinits=3, random_prunes=2,
                eval_batch_size=eval_batch_size)


PAPER = {
    "lenet": _paper(50_000, 1.2e-3, eval_batch_size=500),
    "conv2": _paper(20_000, 2e-4, conv=0.1),
    "conv4": _paper(25_000, 3e-4, conv=0.1),
    "conv6": _paper(30_000, 3e-4, conv=0.15),
    "conv2-dropout": _paper(60_000, 3e-4, conv=0.1),
    "conv4-dropout": _paper(75_000, 2e-4, conv=0.1),
    "conv6-dropout": _paper(90_000, 2e-4, conv=0.15),
}

# The laptop defaults: the paper's optimiser, learning rate, batch size and
# per-layer rates, on a shorter schedule (see README, "Presets").
QUICK = {
    name: {**settings, "trials": 1, "reinits": 1, "random_prunes": 1}
    for name, settings in PAPER.items()
}
QUICK["lenet"].update(iterations=4_000, rounds=11, trials=2, eval_every=200)
for _name in ("conv2", "conv4", "conv6", "conv2-dropout", "conv4-dropout", "conv6-dropout"):
    QUICK[_name].update(iterations=1_000, rounds=4, eval_every=250)

PRESETS = {"quick": QUICK, "paper": PAPER}


def make_config(net, preset="quick", **overrides):
    """The preset's settings for ``net``, with ``overrides`` (None values ignored), validated."""
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose from {', '.join(NETS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset][net])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    config = Config(net=net, **settings)
    config.validate()
    return config
