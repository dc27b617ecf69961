"""The paper's §4 training and pruning: its settings in Config and on the command line,
the lr schedule (warmup inside step decay), the pad-crop-flip augmentation and its
seeded stream, global pruning of the conv weights in the lottery, and a ResNet-20
lottery (on small synthetic images) that resumes after SIGKILL to the same summary."""

import hashlib
import json
import os
import time
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_killed_and_resumed, seeds
from minilottery import lottery, pruning
from minilottery.config import Config, ConfigError, make_config
from minilottery.data import pad_crop_flip
from minilottery.models import resnet20
from minilottery.optim import SGD
from minilottery.pieces import learning_rate, make_optimizer
from minilottery.rundir import Piece, RunDir, load_arrays
from minilottery.run import build_parser, resolve_config
from minilottery.train import augmentation_rng, train


# -- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("net, batch, lr, warmup, milestones, iterations", [
    ("resnet20", 128, 0.1, 0, [20_000, 25_000], 30_000),
    ("resnet20-warmup", 128, 0.03, 20_000, [20_000, 25_000], 30_000),
    ("vgg19", 64, 0.1, 0, [56_240, 84_360], 112_480),
    ("vgg19-warmup", 64, 0.1, 10_000, [56_240, 84_360], 112_480),
])
def test_the_paper_presets_train_as_section_4_does(net, batch, lr, warmup, milestones, iterations):
    config = make_config(net, "paper")
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (config.batch_size, config.lr, config.warmup_iterations) == (batch, lr, warmup)
    assert (config.lr_milestones, config.iterations) == (milestones, iterations)
    assert config.augment and config.pruning == "global"
    assert (config.conv_rate, config.output_rate) == (0.2, 0.0)


def test_the_earlier_nets_keep_their_settings():
    for net in ("lenet", "conv2", "conv4-dropout"):
        for preset in ("quick", "paper"):
            config = make_config(net, preset)
            assert (config.weight_decay, config.warmup_iterations, config.lr_milestones,
                    config.augment, config.pruning) == (0.0, 0, [], False, "layerwise")
            assert learning_rate(config) == config.lr   # a number, as before


@pytest.mark.parametrize("overrides, message", [
    (dict(lr_milestones=[300, 200]), "strictly increasing"),
    (dict(lr_milestones=[0]), r"lr_milestones\[0\]"),
    (dict(lr_milestones="20000"), "must be a list"),
    (dict(lr_milestones=[5_000]), "beyond the training budget"),
    (dict(warmup_iterations=-1), "warmup_iterations"),
    (dict(warmup_iterations=10**6), "warmup_iterations .* beyond"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(pruning="random"), "pruning"),
    (dict(augment="yes"), "augment"),
    (dict(accuracy_at=[700]), "accuracy_at 700 is not an iteration that training evaluates"),
    (dict(accuracy_at=[3_000]), "accuracy_at 3000 is not"),
    (dict(accuracy_at=[1_000, 500]), "strictly increasing"),
    (dict(pruning="global", one_shot=True), "one_shot pruning is layer-wise only"),
])
def test_bad_section_4_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("resnet20", iterations=2_000, **{"lr_milestones": [], "accuracy_at": [],
                                                     **overrides})


def test_a_config_json_written_before_the_section_4_settings_still_loads():
    config = make_config("conv2")
    settings_ = config.settings()
    for name in ("weight_decay", "warmup_iterations", "lr_milestones", "augment", "pruning"):
        del settings_[name]
    line = json.dumps(settings_, sort_keys=True, separators=(",", ":"))
    old = json.dumps({**settings_, "fingerprint": {
        "settings": line, "sha256": hashlib.sha256(line.encode()).hexdigest()}})
    assert Config.from_json(old) == config


def test_the_command_line_reaches_every_section_4_setting(tmp_path):
    args = build_parser().parse_args([
        "resnet20", "--out", str(tmp_path), "--weight-decay", "5e-4", "--warmup", "100",
        "--lr-milestones", "300,400", "--no-augment", "--pruning", "layerwise",
        "--batch-size", "32", "--iterations", "500", "--momentum", "0.5",
        "--accuracy-at", "250,500", "--eval-every", "250"])
    config = resolve_config(args)
    assert (config.weight_decay, config.warmup_iterations, config.lr_milestones) == (5e-4, 100, [300, 400])
    assert (config.augment, config.pruning, config.batch_size, config.momentum) == (False, "layerwise", 32, 0.5)
    assert config.accuracy_at == [250, 500]
    default = resolve_config(build_parser().parse_args(["resnet20", "--out", str(tmp_path)]))
    assert default.augment and default.pruning == "global"
    none = resolve_config(build_parser().parse_args(
        ["resnet20", "--out", str(tmp_path), "--lr-milestones", ""]))
    assert none.lr_milestones == []


def test_the_lr_rises_during_warmup_and_drops_tenfold_at_each_milestone():
    config = make_config("resnet20-warmup", "paper")
    lr = learning_rate(config)
    expected = {0: 0.0, 5_000: 0.0075, 10_000: 0.015, 19_999: 0.03 * 19_999 / 20_000,
                20_000: 0.003, 24_999: 0.003, 25_000: 0.0003, 29_999: 0.0003}
    for iteration, value in expected.items():
        assert lr(iteration) == pytest.approx(value, rel=1e-12), iteration
    optimizer = make_optimizer(config, resnet20(seed=0))
    assert isinstance(optimizer, SGD) and optimizer.weight_decay == np.float32(1e-4)


# -- augmentation -----------------------------------------------------------------------

@settings(deadline=None, max_examples=25)
@given(n=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(1, 4), seed=seeds)
def test_each_image_is_a_crop_of_its_padded_self_perhaps_mirrored(n, c, h, w, pad, seed):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, c, h, w)).astype(np.float32)
    before = images.copy()
    out = pad_crop_flip(images, np.random.default_rng(seed + 1), pad=pad)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(images, before)
    for image, augmented in zip(images, out):
        canvas = np.zeros((c, h + 2 * pad, w + 2 * pad), np.float32)
        canvas[:, pad:pad + h, pad:pad + w] = image
        candidates = [crop[:, :, ::-1] if flip else crop
                      for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                      for crop in [canvas[:, dy:dy + h, dx:dx + w]] for flip in (False, True)]
        assert any(np.array_equal(augmented, candidate) for candidate in candidates)
    again = pad_crop_flip(images, np.random.default_rng(seed + 1), pad=pad)
    np.testing.assert_array_equal(out, again)


def test_every_offset_and_both_orientations_are_drawn_about_equally_often():
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    out = pad_crop_flip(np.repeat(image, 1800, axis=0), np.random.default_rng(0), pad=1)
    _, counts = np.unique(out.reshape(len(out), -1), axis=0, return_counts=True)
    assert len(counts) == 18                       # 3 x 3 offsets, each plain or mirrored
    assert counts.min() > 60 and counts.max() < 150  # 100 expected each


def test_pad_crop_flip_names_a_bad_input():
    with pytest.raises(ValueError, match=r"\(n, c, h, w\)"):
        pad_crop_flip(np.zeros((3, 32, 32), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="pad"):
        pad_crop_flip(np.zeros((1, 3, 4, 4), np.float32), np.random.default_rng(0), pad=0)


def test_the_augmentation_streams_are_one_per_iteration_and_apart_from_the_batch_order():
    draws = [augmentation_rng(7, i).integers(0, 2**31, 4).tolist() for i in (1, 2, 1)]
    assert draws[0] == draws[2] != draws[1]
    assert np.random.default_rng(7).integers(0, 2**31, 4).tolist() != draws[0]


def _tiny_images(seed=0, n=96, side=8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    x = rng.standard_normal((n, 3, side, side)).astype(np.float32) * 0.5
    x[np.arange(n), labels % 3, : side // 2] += 1.0          # a learnable signal
    return x, labels


@pytest.fixture(scope="module")
def tiny_cifar():
    x, y = _tiny_images(0, 160)
    return SimpleNamespace(x_train=x[:96], y_train=y[:96], x_val=x[96:128], y_val=y[96:128],
                           x_test=x[128:], y_test=y[128:])


def test_a_resnet_training_continued_from_a_checkpoint_is_the_same_bit_for_bit(tmp_path, tiny_cifar):
    """BatchNorm's running statistics and the augmentation's draws survive the checkpoint."""
    config = make_config("resnet20-warmup", iterations=12, eval_every=4, batch_size=16,
                         warmup_iterations=6, lr_milestones=[9], accuracy_at=[])

    def run(checkpoint=None, stop_at=None):
        model = resnet20(seed=3)
        optimizer = make_optimizer(config, model)

        def on_eval(iteration, history):
            if iteration == stop_at:
                raise KeyboardInterrupt
        try:
            result = train(model, optimizer, tiny_cifar, iterations=12, batch_size=16, seed=5,
                           eval_every=4, augment=True, checkpoint=checkpoint,
                           checkpoint_seconds=0.0, on_eval=on_eval, threads=1)
        except KeyboardInterrupt:
            return None
        return model, result.history

    whole_model, whole_history = run()
    checkpoint = tmp_path / "checkpoint.npz"
    assert run(checkpoint, stop_at=8) is None and checkpoint.exists()
    model, history = run(checkpoint)
    assert history.rows == whole_history.rows
    for (name, a), b in zip(model.state_dict()["params"].items(),
                            whole_model.state_dict()["params"].values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    bn = model.layers[1]
    whole_bn = whole_model.layers[1]
    np.testing.assert_array_equal(bn.running_mean, whole_bn.running_mean)
    np.testing.assert_array_equal(bn.running_var, whole_bn.running_var)


def test_augmentation_changes_what_a_training_sees(tiny_cifar):
    finals = []
    for augment in (False, True):
        model = resnet20(seed=3)
        train(model, SGD(model, 0.01, momentum=0.9), tiny_cifar, iterations=3, batch_size=16,
              seed=5, eval_every=3, augment=augment, threads=1)
        finals.append(model.state_dict()["params"]["conv1.W"])
    assert not np.array_equal(*finals)


# -- pruning ----------------------------------------------------------------------------

def test_pruning_groups_put_each_kind_together_and_the_output_alone():
    shapes = {"conv1.W": (8, 3, 3, 3), "conv2.W": (8, 8, 3, 3), "fc1.W": (32, 16),
              "fc2.W": (16, 16), "out.W": (16, 10), "short.conv.W": (8, 3, 1, 1)}
    rates = {"conv1.W": 0.1, "conv2.W": 0.1, "fc1.W": 0.2, "fc2.W": 0.2, "out.W": 0.2,
             "short.conv.W": 0.0}
    assert pruning.pruning_groups(rates, shapes) == [
        (["conv1.W", "conv2.W"], 0.1), (["fc1.W", "fc2.W"], 0.2), (["out.W"], 0.2)]


def test_layerwise_rates_leave_the_1x1_shortcuts_unpruned():
    rates = pruning.layerwise_rates(resnet20(seed=0), 0.0, conv_rate=0.2, output_rate=0.0)
    ones = [name for name in rates if "shortcut" in name]
    assert len(ones) == 2 and all(rates[name] == 0.0 for name in ones)
    assert sum(rate == 0.2 for rate in rates.values()) == 19


def _conv_counts(masks):
    threes = sum(int(m.sum()) for m in masks.values() if m.ndim == 4 and m.shape[2:] == (3, 3))
    return threes, {n: int(m.sum()) for n, m in masks.items() if m.ndim != 4 or m.shape[2:] != (3, 3)}


@pytest.mark.parametrize("mode", ["global", "layerwise"])
def test_a_resnet_lottery_prunes_its_conv_weights_as_the_mode_says(tmp_path, tiny_cifar, mode):
    config = make_config("resnet20", iterations=4, eval_every=4, batch_size=16, rounds=2,
                         lr_milestones=[], accuracy_at=[4], conv_rate=0.2, reinits=1,
                         random_prunes=0, pruning=mode)
    lottery.run_experiment(config, tmp_path / "run", data=tiny_cifar)
    run = RunDir(tmp_path / "run")
    dense = load_arrays(run.mask(0, 0))
    for level in (1, 2):
        masks = load_arrays(run.mask(0, level))
        threes, others = _conv_counts(masks)
        if mode == "global":
            assert threes == pruning.kept_after_rounds(267_696, 0.2, level)
        else:
            assert threes == sum(pruning.kept_after_rounds(m.size, 0.2, level)
                                 for m in dense.values() if m.ndim == 4 and m.shape[2:] == (3, 3))
        assert others == {n: dense[n].size for n in others}    # shortcuts and out: all kept


# -- a ResNet-20 lottery killed with SIGKILL ---------------------------------------------

KILLABLE_RESNET = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    import numpy as np
    from minilottery import lottery
    from minilottery.config import make_config
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 160)
    x = rng.standard_normal((160, 3, 8, 8)).astype(np.float32)
    data = SimpleNamespace(x_train=x[:96], y_train=labels[:96], x_val=x[96:128],
                           y_val=labels[96:128], x_test=x[128:], y_test=labels[128:])
    config = make_config("resnet20-warmup", iterations=12, eval_every=4, batch_size=16,
                         rounds=2, warmup_iterations=4, lr_milestones=[8], reinits=1,
                         random_prunes=0, accuracy_at=[4, 12])
    lottery.run_experiment(config, sys.argv[1], data=data)
""")


def test_a_resnet_run_killed_with_sigkill_resumes_to_the_same_summary(tmp_path):
    """Killed after level 1's ticket, inside level 2's: the resumed run's summary and
    trained weights are those of the uninterrupted one, bit for bit."""
    def level_2_unfinished(killed):
        assert not (killed / "trial0" / "level02" / "ticket" / "metrics.json").exists()

    whole, killed = run_killed_and_resumed(
        tmp_path, KILLABLE_RESNET,
        lambda run: RunDir(run).piece(Piece(0, 1, "ticket")) / "metrics.json",
        after_kill=level_2_unfinished)
    assert (killed / "summary.csv").read_bytes() == (whole / "summary.csv").read_bytes()
    final = Path("trial0") / "level02" / "ticket" / "final.npz"
    expected, again = load_arrays(whole / final), load_arrays(killed / final)
    assert all(np.array_equal(expected[k], again[k]) for k in expected)


@pytest.mark.parametrize("net", ["resnet20", "resnet20-warmup", "vgg19", "vgg19-warmup"])
def test_the_quick_presets_shorten_the_papers_schedule_alike(net):
    paper, quick = make_config(net, "paper"), make_config(net)
    assert (quick.optimizer, quick.momentum, quick.weight_decay, quick.batch_size, quick.lr) == (
        paper.optimizer, paper.momentum, paper.weight_decay, paper.batch_size, paper.lr)
    ratio = quick.iterations / paper.iterations
    assert ratio == pytest.approx(1 / 40, rel=1e-3)
    for short, long in [*zip(quick.lr_milestones, paper.lr_milestones),
                        *zip(quick.accuracy_at, paper.accuracy_at),
                        (quick.warmup_iterations, paper.warmup_iterations)]:
        assert short == pytest.approx(long * ratio, abs=1)
    assert quick.pruning == "global" and quick.augment
    model = resnet20(seed=0) if net.startswith("resnet") else None
    if model is not None:
        kept = pruning.kept_after_rounds(267_696, quick.conv_rate, quick.rounds)
        assert kept / 267_696 == pytest.approx(0.16, abs=1e-4)


def test_a_fixed_iteration_run_reports_those_accuracies_in_summary_table_and_figure(tmp_path, tiny_cifar):
    from minilottery.plots import draw_figures
    from minilottery.results import read_history, read_summary, table
    config = make_config("resnet20-warmup", iterations=8, eval_every=4, batch_size=16, rounds=1,
                         warmup_iterations=4, lr_milestones=[], accuracy_at=[4, 8], reinits=1,
                         random_prunes=0)
    rows = lottery.run_experiment(config, tmp_path / "run", data=tiny_cifar)
    assert read_summary(tmp_path / "run") == rows
    for row in rows:
        piece = Piece(row["trial"], row["level"], row["branch"], row["replicate"])
        history = read_history(tmp_path / "run", piece)
        assert [row["test_acc_at_iteration_4"], row["test_acc_at_iteration_8"]] == \
            history["test_acc"].tolist()
    text = table(rows).splitlines()
    assert text[0].split() == ["level", "weights", "%", "ticket", "acc@4", "ticket", "acc@8",
                               "reinit", "acc@4", "reinit", "acc@8"]
    assert f"{100 * rows[0]['test_acc_at_iteration_8']:.2f}" in text[2]
    names = sorted(p.name for p in draw_figures(tmp_path / "run"))
    assert names == ["fig3_test_accuracy.png", "fig8_fixed_iterations.png"]


LONG = os.environ.get("MINILOTTERY_LONG_TESTS") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="a 2,000-iteration ResNet-20 training takes about 20 "
                                     "minutes on 2 cores; set MINILOTTERY_LONG_TESTS=1 to run it")
def test_a_short_resnet20_training_on_cifar10_reaches_65_percent():
    """2,000 iterations of batch 128 (5.7 epochs), SGD with momentum 0.9 and weight decay
    1e-4, lr 0.1 after a linear warmup over 500 iterations, divided by 10 at 1,500, with
    the pad-crop-flip augmentation: the §4 recipe on a short schedule."""
    from minilottery.data import load_cifar10
    try:
        cifar = load_cifar10(download=False)
    except Exception as error:          # not on this machine
        pytest.skip(f"CIFAR-10 not found: {error}")
    config = make_config("resnet20-warmup", iterations=2_000, lr=0.1, warmup_iterations=500,
                         lr_milestones=[1_500], accuracy_at=[2_000], eval_every=2_000)
    model = resnet20(seed=0)
    start = time.monotonic()
    result = train(model, make_optimizer(config, model), cifar, iterations=2_000,
                   batch_size=128, seed=0, eval_every=2_000, eval_batch_size=500, augment=True)
    accuracy = result.history.summary()["final_test_acc"]
    print(f"ResNet-20, 2,000 iterations: test accuracy {100 * accuracy:.2f}% "
          f"in {time.monotonic() - start:.0f} s")
    assert accuracy >= 0.65
