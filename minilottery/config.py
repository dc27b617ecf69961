"""What an experiment is: the net, its training schedule, its pruning rates, its controls.

``PAPER`` holds Frankle & Carbin's settings (Frankle & Carbin 2019, Fig. 2 and
App. G/H; docs/paper.md lists them with their sections), ``QUICK`` the laptop
defaults that ``python -m minilottery.run NET`` uses: shorter schedules chosen
to finish in minutes on two cores and still show the paper's effect.
``make_config`` merges a preset with user overrides.

A Config is checked when it is made: every setting against its rule in
``RULES`` (its type and range, from minilottery.checks, the rules the
optimizers use too), then the rules that relate two settings
(``Config.validate``). A bad setting raises ConfigError, one line naming the
setting and the bad value, before anything is trained or written.

config.json and its fingerprint
-------------------------------
A run stores its Config as config.json: every setting, readable, and after
them a *fingerprint*, the same settings as one line of canonical JSON (sorted
keys, no spaces) with the sha256 of that line::

    {
      "batch_size": 60,
      ...
      "val_size": 5000,
      "fingerprint": {
        "settings": "{\\"batch_size\\":60,...,\\"val_size\\":5000}",
        "sha256": "3b0c..."
      }
    }

``load_config`` (and ``Config.from_json``) reads it back and refuses a file
that was edited by hand, naming the setting:

1. the line must hash to its sha256 (else the fingerprint itself was edited);
2. each readable setting must equal the one in the line, or the message says
   ``config.json was edited by hand: iterations is 500, the run was made
   with 1000``: the line keeps the values the run was made with;
3. the settings must be exactly this version's (no unknown, none missing)
   and obey the rules above.

The fingerprint detects mistakes, not forgery: whoever rewrites the line and
its sha256 can make any config.json pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from . import checks
from .data import TRAIN_EXAMPLES

__all__ = ["NETS", "OPTIMIZERS", "PRESETS", "PAPER", "QUICK", "RULES", "Config", "ConfigError",
           "make_config", "load_config"]

# net name -> (builder in minilottery.models.BUILDERS, dropout rate, dataset)
NETS = {
    "lenet": ("lenet", 0.0, "mnist"),
    "conv2": ("conv2", 0.0, "cifar10"),
    "conv4": ("conv4", 0.0, "cifar10"),
    "conv6": ("conv6", 0.0, "cifar10"),
    "conv2-dropout": ("conv2", 0.5, "cifar10"),
    "conv4-dropout": ("conv4", 0.5, "cifar10"),
    "conv6-dropout": ("conv6", 0.5, "cifar10"),
    "resnet20": ("resnet20", 0.0, "cifar10"),
    "resnet20-warmup": ("resnet20", 0.0, "cifar10"),
    "vgg19": ("vgg19", 0.0, "cifar10"),
    "vgg19-warmup": ("vgg19", 0.0, "cifar10"),
}

OPTIMIZERS = ("adam", "sgd")
PRUNINGS = ("layerwise", "global")


class ConfigError(ValueError):
    """A setting, or a stored config.json, is not valid; the message names it."""


@dataclass(frozen=True)
class Config:
    """Every setting of one lottery experiment (stored as config.json in the run).

    Checked when made (see the module docstring): ``Config(..., lr=float("inf"))``
    raises ConfigError. Numbers come back in their plain form: lr 1 becomes 1.0.
    """

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
    weight_decay: float = 0.0    # L2 on the surviving weights (masked: a pruned weight stays 0)
    warmup_iterations: int = 0   # the lr rises linearly from 0 over the first k iterations (0: none)
    lr_milestones: list = field(default_factory=list)  # the lr is divided by 10 at each of them
    augment: bool = False        # random 4-pixel pad-and-crop and horizontal flip of each image
    pruning: str = "layerwise"   # or "global": each kind of layer ranked together (pruning_groups)
    accuracy_at: list = field(default_factory=list)  # §4: test accuracy read at these iterations
    trials: int = 1              # independent initialisations (paper: 5)
    reinits: int = 1             # random-reinit controls per trial and level (paper: 3)
    random_prunes: int = 1       # random-pruning controls per trial and level
    seed: int = 0
    eval_every: int = 100        # paper: every 100 iterations; the last one is always evaluated,
                                 # so eval_every >= iterations means one evaluation, at the end
    eval_batch_size: int = 500   # evaluation chunk: bounds memory, not results
    rewind_iteration: int = 0    # 0: reset to theta_0 (the paper); k > 0: rewind to theta_k
    one_shot: bool = False       # prune the dense net once to each level's size
    layer_rates: dict = field(default_factory=dict)  # per-layer overrides {"fc1": 0.3}
    val_size: int = 5000         # held out of the training set with a fixed seed
    val_seed: int = 0
    preset: str | None = None    # the preset make_config started from (None: made directly)

    def __post_init__(self):
        for name, rule in RULES.items():  # check each setting, keep its plain form
            object.__setattr__(self, name, _apply(rule, getattr(self, name), name))
        self.validate()

    @property
    def builder(self):
        return NETS[self.net][0]

    @property
    def dropout(self):
        return NETS[self.net][1]

    @property
    def dataset(self):
        return NETS[self.net][2]

    def validate(self):
        """Raise ConfigError naming the first bad setting: each setting's rule in
        RULES, then the rules between settings. Runs when a Config is made."""
        for name, rule in RULES.items():
            _apply(rule, getattr(self, name), name)
        if self.lr_milestones and self.lr_milestones[-1] > self.iterations:
            raise ConfigError(f"lr_milestones {self.lr_milestones} reach beyond the training "
                              f"budget of {self.iterations} iterations")
        if self.warmup_iterations > self.iterations:
            raise ConfigError(f"warmup_iterations {self.warmup_iterations} is beyond the "
                              f"training budget of {self.iterations} iterations")
        for k in self.accuracy_at:
            if k > self.iterations or (k % self.eval_every and k != self.iterations):
                raise ConfigError(f"accuracy_at {k} is not an iteration that training evaluates "
                                  f"(every {self.eval_every} of {self.iterations}, and the last)")
        if self.pruning == "global" and self.one_shot:
            raise ConfigError("one_shot pruning is layer-wise only; use pruning='layerwise' "
                              "with one_shot, or iterative global pruning")
        if self.rewind_iteration > self.iterations:
            raise ConfigError(f"rewind_iteration {self.rewind_iteration} is beyond the "
                              f"training budget of {self.iterations} iterations")
        examples = TRAIN_EXAMPLES[self.dataset]
        if self.val_size >= examples:
            raise ConfigError(f"val_size {self.val_size} leaves no training examples: "
                              f"{self.dataset} has {examples}")
        if self.batch_size > examples - self.val_size:
            raise ConfigError(f"batch_size {self.batch_size} is more than the "
                              f"{examples - self.val_size} training examples of {self.dataset} "
                              f"({examples} minus val_size {self.val_size})")

    def settings(self):
        """The settings as a plain dict, keys sorted (what config.json holds)."""
        return dict(sorted(dataclasses.asdict(self).items()))

    def to_json(self):
        """config.json: the settings, then their fingerprint (see the module docstring)."""
        line = _canonical(self.settings())
        fingerprint = {"settings": line, "sha256": _sha256(line)}
        return json.dumps({**self.settings(), "fingerprint": fingerprint}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text, source="config.json"):
        """The Config that ``to_json`` wrote; ConfigError (naming ``source`` and the
        setting) if the text is not such a file or was edited by hand."""
        try:
            stored = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}: not valid JSON ({error})") from None
        if not isinstance(stored, dict):
            raise ConfigError(f"{source}: expected a JSON object of settings, "
                              f"got {type(stored).__name__}")
        made_with = _made_with(stored.pop("fingerprint", None), source)
        edits = [_describe_edit(name, stored, made_with)
                 for name in sorted(set(stored) | set(made_with))
                 if _canonical(stored.get(name, _ABSENT)) != _canonical(made_with.get(name, _ABSENT))]
        if edits:
            raise ConfigError(f"{source} was edited by hand: {'; '.join(edits)}. Undo the edit, "
                              f"or start a new run in another directory")
        for name, default in ADDED_LATER.items():   # a run made before they existed
            if name not in stored and name not in made_with:
                stored[name] = default
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(stored) - set(names))
        missing = [name for name in names if name not in stored]
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"unknown settings {unknown}")
            if missing:
                problems.append(f"missing settings {missing}")
            raise ConfigError(f"{source} was written by another version of minilottery: "
                              + "; ".join(problems))
        try:
            return cls(**stored)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def load_config(path):
    """The validated Config stored in the file ``path`` (a run's config.json).

    Raises ConfigError, one line naming the file and the setting, if the file
    cannot be read, is not a config.json, or was edited by hand.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    return Config.from_json(text, source=path)


# --------------------------------------------------------------------------
# The rules: each setting's type and range. Config applies every one of them.
# --------------------------------------------------------------------------

def _rate(value, name):
    """A pruning rate: the fraction of surviving weights pruned per round, in [0, 1)."""
    return checks.real(value, name, low=0.0, high=1.0, high_open=True)


def _layer_rates(value, name):
    """{layer name: rate}, e.g. {"fc1": 0.3}; copied, so that the Config owns it."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of layer name -> rate, got {value!r}")
    for layer in value:
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"{name} must be keyed by layer names, got the key {layer!r}")
    return {layer: _rate(rate, f"{name}[{layer!r}]") for layer, rate in sorted(value.items())}


def _iterations(value, name):
    """A list of iterations (lr milestones, accuracy_at): strictly increasing ints >= 1."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a list of iterations, got {value!r}")
    milestones = [checks.integer(ms, f"{name}[{i}]", low=1) for i, ms in enumerate(value)]
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {milestones}")
    return milestones


def _preset(value, name):
    return checks.choice(value, name, (None, *PRESETS))


def _apply(rule, value, name):
    try:
        return rule(value, name)
    except ValueError as error:
        raise ConfigError(str(error)) from None


_at_least_1 = partial(checks.integer, low=1)
_at_least_0 = partial(checks.integer, low=0)

RULES = {
    "net": partial(checks.choice, options=tuple(NETS)),
    "iterations": _at_least_1,
    "batch_size": _at_least_1,
    "lr": checks.learning_rate,
    "fc_rate": _rate,
    "conv_rate": _rate,
    "output_rate": _rate,
    "rounds": _at_least_0,
    "optimizer": partial(checks.choice, options=OPTIMIZERS),
    "momentum": partial(checks.real, low=0.0, high=1.0, high_open=True, float32=True),
    "weight_decay": partial(checks.real, low=0.0, float32=True),
    "warmup_iterations": _at_least_0,
    "lr_milestones": _iterations,
    "augment": checks.boolean,
    "pruning": partial(checks.choice, options=PRUNINGS),
    "accuracy_at": _iterations,
    "trials": _at_least_1,
    "reinits": _at_least_0,
    "random_prunes": _at_least_0,
    "seed": checks.seed,
    "eval_every": _at_least_1,
    "eval_batch_size": _at_least_1,
    "rewind_iteration": _at_least_0,
    "one_shot": checks.boolean,
    "layer_rates": _layer_rates,
    "val_size": _at_least_0,
    "val_seed": checks.seed,
    "preset": _preset,
}


# Settings newer than the first config.json: a stored run without them was made
# with these values (the behaviour before they existed), so it still resumes.
ADDED_LATER = {"weight_decay": 0.0, "warmup_iterations": 0, "lr_milestones": [],
               "augment": False, "pruning": "layerwise", "accuracy_at": []}

# --------------------------------------------------------------------------
# The fingerprint
# --------------------------------------------------------------------------

_ABSENT = object()  # a setting missing from one side of the comparison


def _canonical(value):
    """One line of JSON, keys sorted, no spaces: equal settings give equal text."""
    if value is _ABSENT:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _made_with(fingerprint, source):
    """The settings the run was made with: the fingerprint's line, checked against its sha256."""
    if fingerprint is None:
        raise ConfigError(f"{source} has no fingerprint: it was not written by minilottery, "
                          f"or its fingerprint was removed")
    if not (isinstance(fingerprint, dict) and set(fingerprint) == {"settings", "sha256"}
            and isinstance(fingerprint["settings"], str)):
        raise ConfigError(f"{source}: the fingerprint must be {{\"settings\": ..., \"sha256\": ...}}, "
                          f"got {fingerprint!r}")
    line = fingerprint["settings"]
    if _sha256(line) != fingerprint["sha256"]:
        raise ConfigError(f"{source} was edited by hand: its fingerprint's settings no longer "
                          f"hash to its sha256, so the run's settings are unknown; restore the "
                          f"file, or start a new run in another directory")
    made_with = json.loads(line)
    if not isinstance(made_with, dict):
        raise ConfigError(f"{source}: the fingerprint's settings must be a JSON object, got {line!r}")
    return made_with


def _describe_edit(name, stored, made_with):
    if name not in stored:
        return f"{name} was removed (the run was made with {_canonical(made_with[name])})"
    if name not in made_with:
        return f"{name} was added (it is {_canonical(stored[name])})"
    return f"{name} is {_canonical(stored[name])}, the run was made with {_canonical(made_with[name])}"


# --------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------

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


def _paper_deep(iterations, batch_size, lr, milestones, accuracy_at, warmup=0):
    """§4 and App. I: SGD with momentum 0.9 and weight decay 1e-4, step decay, optional
    warmup, augmentation, and global pruning of the conv weights at 20% a round (the
    output layer and ResNet's 1x1 shortcuts unpruned); accuracy read at fixed iterations
    (Figs. 7 and 8), not at early stopping."""
    return dict(iterations=iterations, batch_size=batch_size, optimizer="sgd", lr=lr,
                momentum=0.9, weight_decay=1e-4, lr_milestones=milestones,
                warmup_iterations=warmup, augment=True, pruning="global",
                fc_rate=0.0, conv_rate=0.2, output_rate=0.0, rounds=20, trials=5, reinits=3,
                random_prunes=2, eval_every=1_000, eval_batch_size=100,
                accuracy_at=accuracy_at)


_VGG_EPOCH = 703   # 45,000 training images in batches of 64: 160 epochs are 112,480 iterations
PAPER.update({
    "resnet20": _paper_deep(30_000, 128, 0.1, [20_000, 25_000], [10_000, 20_000, 30_000]),
    "resnet20-warmup": _paper_deep(30_000, 128, 0.03, [20_000, 25_000], [10_000, 20_000, 30_000],
                                   warmup=20_000),
    "vgg19": _paper_deep(160 * _VGG_EPOCH, 64, 0.1, [80 * _VGG_EPOCH, 120 * _VGG_EPOCH],
                         [30_000, 60_000, 160 * _VGG_EPOCH]),
    "vgg19-warmup": _paper_deep(160 * _VGG_EPOCH, 64, 0.1, [80 * _VGG_EPOCH, 120 * _VGG_EPOCH],
                                [30_000, 60_000, 160 * _VGG_EPOCH], warmup=10_000),
})

# The laptop defaults: the paper's optimiser, learning rate, batch size and
# per-layer rates, on a shorter schedule (see README, "Presets").
QUICK = {
    name: {**settings, "trials": 1, "reinits": 1, "random_prunes": 1}
    for name, settings in PAPER.items()
}
QUICK["lenet"].update(iterations=4_000, rounds=11, trials=2, eval_every=200)
# The conv nets: three rounds at a high fc rate reach the paper's sparsest tickets,
# with the random-reinit control of Fig. 5 only. The conv and output layers follow
# the paper's pruning path: at every round they keep the fraction they keep in the
# paper's schedule once its fc layers are as sparse (Conv-2 at 9.3% of its weights
# keeps 31% of its conv weights, as the paper's does at 8.8%). Conv-2 at 4e-4, a
# rate of the paper's sweep (App. H.2), overfits soon enough for its minimum
# validation loss to fall well inside 3,000 iterations; so does Conv-4 at 4e-4, whose
# validation loss at the paper's 3e-4 was still falling at 2,000. The README's "Presets"
# says why each value was chosen.
def _rate_on_paper_path(fc_rate, paper_fc_rate, paper_rate):
    """The per-round rate r that keeps a group of layers on the paper's path when the fc
    layers lose ``fc_rate`` a round: after k rounds the fc layers keep (1 - fc_rate)^k,
    which the paper's schedule reaches after k' = k ln(1 - fc_rate) / ln(1 - paper_fc_rate)
    rounds, when the group keeps (1 - paper_rate)^k'. So
    1 - r = (1 - fc_rate)^(ln(1 - paper_rate) / ln(1 - paper_fc_rate)), rounded to 0.01."""
    exponent = math.log(1 - paper_rate) / math.log(1 - paper_fc_rate)
    return round(1 - (1 - fc_rate) ** exponent, 2)


_CONV_QUICK = {   # net: (iterations, eval_every, learning rate or None for the paper's, fc rate)
    "conv2": (3_000, 250, 4e-4, 0.55),
    "conv4": (3_000, 500, 8e-4, 0.52),
    "conv6": (2_000, 400, None, 0.58),
}
for _name, (_iterations, _eval_every, _lr, _fc_rate) in _CONV_QUICK.items():
    for _variant, _scale in ((_name, 1), (f"{_name}-dropout", 1.5)):   # dropout learns slower
        _paper_settings = PAPER[_variant]
        QUICK[_variant].update(
            iterations=int(_iterations * _scale), eval_every=_eval_every, rounds=3,
            random_prunes=0, fc_rate=_fc_rate,
            conv_rate=_rate_on_paper_path(_fc_rate, _paper_settings["fc_rate"],
                                          _paper_settings["conv_rate"]),
            output_rate=_rate_on_paper_path(_fc_rate, _paper_settings["fc_rate"],
                                            _paper_settings["output_rate"]))
        if _lr is not None and not _variant.endswith("dropout"):
            QUICK[_variant]["lr"] = _lr


def _shortened(settings, factor):
    """The §4 schedule ``factor`` times as long: iterations, milestones, warmup and the
    fixed iterations all scaled alike, so warmup still ends where the paper's does."""
    scale = lambda k: max(1, round(k * factor))
    return dict(iterations=scale(settings["iterations"]),
                lr_milestones=[scale(k) for k in settings["lr_milestones"]],
                warmup_iterations=scale(settings["warmup_iterations"]) if settings["warmup_iterations"] else 0,
                accuracy_at=[scale(k) for k in settings["accuracy_at"]])


# §4's nets, quick: a fortieth of the paper's schedule, evaluated at its fixed
# iterations (ResNet-20 at 250, 500 and 750), two rounds of global pruning at 60%
# (16% of the conv weights left), one random reinit per level: five trainings, which
# is what fits in an hour on 2 cores (README, "Deeper nets").
QUICK_DEEP_FACTOR = 1 / 40
for _name in ("resnet20", "resnet20-warmup", "vgg19", "vgg19-warmup"):
    QUICK[_name].update(_shortened(PAPER[_name], QUICK_DEEP_FACTOR), conv_rate=0.6, rounds=2,
                        random_prunes=0)
    QUICK[_name]["eval_every"] = QUICK[_name]["accuracy_at"][0]   # the last is evaluated too

PRESETS = {"quick": QUICK, "paper": PAPER}


def make_config(net, preset="quick", **overrides):
    """The preset's settings for ``net``, with ``overrides`` (None values ignored).

    The Config records the preset it started from (``config.preset``); the
    overrides are in its values. Raises ConfigError naming a bad setting.
    """
    _apply(RULES["net"], net, "net")
    _apply(partial(checks.choice, options=tuple(PRESETS)), preset, "preset")
    settings = dict(PRESETS[preset][net])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Config)} - {"net", "preset"}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(f"unknown settings {sorted(unknown)}")
    return Config(net=net, preset=preset, **settings)
