"""The prune-reset experiment: masks, resets, resume, reproducibility, and the paper's effect."""

import textwrap

import numpy as np
import pytest

from conftest import run_killed_and_resumed
from minilottery import lottery, pieces, pruning
from minilottery.config import make_config
from minilottery.data import load_mnist
from minilottery.results import read_summary
from minilottery.rundir import Piece, RunDir, load_arrays


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def tiny_config(**overrides):
    settings = dict(iterations=60, eval_every=20, rounds=2, trials=1, reinits=1,
                    random_prunes=1, fc_rate=0.5, output_rate=0.25)
    settings.update(overrides)
    return make_config("lenet", **settings)


def test_masks_shrink_by_magnitude_and_survivors_reset_to_theta0(tmp_path, small_mnist):
    config = tiny_config()
    lottery.run_experiment(config, tmp_path, data=small_mnist)
    run = RunDir(tmp_path)
    theta0 = load_arrays(run.theta0(0))
    rates = lottery.pruning_rates(config, lottery.build_model(config, seed=0))
    for level in range(1, config.rounds + 1):
        previous = load_arrays(run.mask(0, level - 1))
        mask = load_arrays(run.mask(0, level))
        trained = load_arrays(run.piece(Piece(0, level - 1, "ticket")) / "final.npz")
        for name, rate in rates.items():
            survivors = previous[name] == 1
            kept = mask[name] == 1
            assert not (kept & ~survivors).any(), f"{name}: a pruned weight came back"
            n_pruned = int(survivors.sum() - kept.sum())
            assert n_pruned == int(np.floor(rate * survivors.sum()))
            # every pruned weight is no larger than every kept one
            magnitudes = np.abs(trained[name])
            pruned_now = survivors & ~kept
            assert magnitudes[pruned_now].max() <= magnitudes[kept].min()

        # The ticket starts from theta_0 on the mask, bit for bit.
        model, ticket_mask = lottery.prepare_model(run, config, Piece(0, level, "ticket"))
        for name, param in model.named_params().items():
            expected = theta0[name] * ticket_mask[name] if name in ticket_mask else theta0[name]
            np.testing.assert_array_equal(param, expected)
        # The reinit control keeps the mask but not the init.
        reinit, reinit_mask = lottery.prepare_model(run, config, Piece(0, level, "reinit", 0))
        for name, m in reinit_mask.items():
            np.testing.assert_array_equal(m, ticket_mask[name])
            assert not np.array_equal(reinit.named_params()[name], model.named_params()[name])
        # The random-pruning control keeps the init and each layer's count, not the mask.
        random, random_mask = lottery.prepare_model(run, config, Piece(0, level, "random", 0))
        for name, m in random_mask.items():
            assert m.sum() == ticket_mask[name].sum()
            assert not np.array_equal(m, ticket_mask[name])
            np.testing.assert_array_equal(random.named_params()[name], theta0[name] * m)


def test_pruned_weights_stay_zero_during_training(tmp_path, small_mnist, monkeypatch):
    config = tiny_config(rounds=1)
    checked = []

    def checking_optimizer(config, model):
        optimizer = make_optimizer(config, model)
        step = optimizer.step

        def step_and_check():
            step()
            for layer in model.layers:
                for key, mask in layer.masks.items():
                    assert not layer.params[key][mask == 0].any(), f"{layer.name}.{key}"
            checked.append(True)
        optimizer.step = step_and_check
        return optimizer

    make_optimizer = pieces.make_optimizer
    monkeypatch.setattr(pieces, "make_optimizer", checking_optimizer)  # where trainings make theirs
    lottery.run_experiment(config, tmp_path, data=small_mnist)
    assert len(checked) == config.iterations * 4  # dense ticket, then ticket + 2 controls


def test_same_seed_same_numbers_and_trials_differ(tmp_path, small_mnist):
    config = tiny_config(trials=2, rounds=1)
    first = lottery.run_experiment(config, tmp_path / "a", data=small_mnist)
    second = lottery.run_experiment(config, tmp_path / "b", data=small_mnist)
    assert first == second
    assert (RunDir(tmp_path / "a").summary.read_bytes()
            == RunDir(tmp_path / "b").summary.read_bytes())
    by_trial = [[row for row in first if row["trial"] == t] for t in range(2)]
    assert by_trial[0][0]["final_test_acc"] != by_trial[1][0]["final_test_acc"] or \
        by_trial[0][0]["val_loss_at_early_stop"] != by_trial[1][0]["val_loss_at_early_stop"]
    theta = [load_arrays(RunDir(tmp_path / "a").theta0(t)) for t in range(2)]
    assert not np.array_equal(theta[0]["fc1.W"], theta[1]["fc1.W"])


def test_parallel_jobs_give_the_same_summary(tmp_path, small_mnist):
    config = tiny_config(rounds=1, reinits=2)
    lottery.run_experiment(config, tmp_path / "serial", data=small_mnist, jobs=1)
    lottery.run_experiment(config, tmp_path / "parallel", data=small_mnist, jobs=2)
    assert (RunDir(tmp_path / "serial").summary.read_bytes()
            == RunDir(tmp_path / "parallel").summary.read_bytes())


def test_finished_run_resumes_without_training(tmp_path, small_mnist, monkeypatch):
    config = tiny_config(rounds=1)
    rows = lottery.run_experiment(config, tmp_path, data=small_mnist)
    assert lottery.pieces_to_do(config, tmp_path) == []
    monkeypatch.setattr(lottery, "run_training", lambda *a, **k: pytest.fail("trained again"))
    assert lottery.run_experiment(config, tmp_path, data=small_mnist) == rows


def test_rewind_and_one_shot_variants_run(tmp_path, small_mnist):
    rewind = tiny_config(rewind_iteration=20)
    lottery.run_experiment(rewind, tmp_path / "rewind", data=small_mnist)
    run = RunDir(tmp_path / "rewind")
    theta_k = load_arrays(run.rewind(0))
    model, mask = lottery.prepare_model(run, rewind, Piece(0, 1, "ticket"))
    np.testing.assert_array_equal(model.named_params()["fc1.W"], theta_k["fc1.W"] * mask["fc1.W"])
    assert not np.array_equal(theta_k["fc1.W"], load_arrays(run.theta0(0))["fc1.W"])

    one_shot = tiny_config(one_shot=True)
    lottery.run_experiment(one_shot, tmp_path / "oneshot", data=small_mnist)
    run = RunDir(tmp_path / "oneshot")
    dense_final = load_arrays(run.piece(Piece(0, 0, "ticket")) / "final.npz")
    rates = lottery.pruning_rates(one_shot, lottery.build_model(one_shot, seed=0))
    dense_mask = load_arrays(run.mask(0, 0))
    expected = pruning.one_shot_masks({n: dense_final[n] for n in dense_mask}, dense_mask, rates, 2)
    level2 = load_arrays(run.mask(0, 2))
    for name in expected:
        np.testing.assert_array_equal(level2[name], expected[name])


@pytest.mark.parametrize("overrides, message", [
    (dict(fc_rate=1.0), "fc_rate"),
    (dict(conv_rate=-0.1), "conv_rate"),
    (dict(layer_rates={"fc9": 0.2}), "fc9"),
    (dict(rounds=60, fc_rate=0.9), "rounds"),
    (dict(rewind_iteration=1000), "rewind_iteration"),
    (dict(iterations=0), "iterations"),
])
def test_invalid_settings_fail_before_training(tmp_path, small_mnist, overrides, message):
    with pytest.raises(ValueError, match=message):
        config = tiny_config(**overrides)
        lottery.run_experiment(config, tmp_path / "run", data=small_mnist)
    assert not (tmp_path / "run").exists()


def test_unknown_net_is_named():
    with pytest.raises(ValueError, match="unknown net 'resnet50'.*lenet"):
        make_config("resnet50")


KILLABLE_RUN = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    from minilottery import lottery
    from minilottery.config import make_config
    from minilottery.data import load_mnist
    d = load_mnist()
    data = SimpleNamespace(x_train=d.x_train[:2000], y_train=d.y_train[:2000],
                           x_val=d.x_val[:500], y_val=d.y_val[:500],
                           x_test=d.x_test[:500], y_test=d.y_test[:500])
    config = make_config("lenet", iterations=150, eval_every=50, rounds=3, trials=1,
                         reinits=1, random_prunes=1, fc_rate=0.5, output_rate=0.25)
    lottery.run_experiment(config, sys.argv[1], data=data)
""")


def test_run_killed_with_sigkill_resumes_to_the_same_summary(tmp_path):
    def something_left(killed):
        assert lottery.pieces_to_do(make_config(
            "lenet", iterations=150, eval_every=50, rounds=3, trials=1, reinits=1,
            random_prunes=1, fc_rate=0.5, output_rate=0.25), killed), "nothing left to resume"

    # Killed in the middle of level 2, once some of its trainings are finished.
    whole, killed = run_killed_and_resumed(
        tmp_path, KILLABLE_RUN, lambda run: RunDir(run).piece(Piece(0, 2, "ticket")) / "metrics.json",
        after_kill=something_left, timeout=120)
    assert not list(killed.rglob("*.tmp")), "a killed write's temporary file was left behind"
    assert (killed / "summary.csv").read_bytes() == (whole / "summary.csv").read_bytes()


@pytest.mark.slow
def test_lenet_on_mnist_finds_winning_tickets(tmp_path, mnist):
    """The paper's effect on a short schedule: >97% dense, and at the sparsest level
    the winning ticket beats its random reinitialisation."""
    config = make_config("lenet", iterations=3000, rounds=5, fc_rate=0.5, output_rate=0.25,
                         trials=1, reinits=1, random_prunes=0, eval_every=250)
    rows = lottery.run_experiment(config, tmp_path, data=mnist)
    dense = next(r for r in rows if r["level"] == 0)
    assert dense["test_acc_at_early_stop"] > 0.97
    last = max(r["level"] for r in rows)
    ticket = next(r for r in rows if r["level"] == last and r["branch"] == "ticket")
    reinit = next(r for r in rows if r["level"] == last and r["branch"] == "reinit")
    assert ticket["weights_remaining"] < 0.05
    assert ticket["test_acc_at_early_stop"] > reinit["test_acc_at_early_stop"]
    assert read_summary(tmp_path) == rows
