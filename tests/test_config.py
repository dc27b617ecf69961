"""Tests of minilottery.config: every setting's rule, config.json and its
fingerprint, load_config; and the command line's answers to bad settings and
to a resume with other settings (exit 2, one line, nothing written)."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilottery import checks
from minilottery.config import RULES, Config, ConfigError, load_config, make_config

ROOT = Path(__file__).resolve().parent.parent
FIELDS = [f.name for f in dataclasses.fields(Config)]


def lenet(**settings):
    return make_config("lenet", **settings)


# ---------------------------------------------------------------- every setting has a rule

def test_every_setting_has_a_rule():
    assert sorted(RULES) == sorted(FIELDS)


def test_a_config_is_made_as_before_and_records_no_preset():
    config = Config(net="lenet", iterations=10, batch_size=60, lr=1e-3, fc_rate=0.2,
                    conv_rate=0.0, output_rate=0.1, rounds=2)
    assert config.preset is None and config.optimizer == "adam"
    assert make_config("conv2", "paper").preset == "paper" and lenet().preset == "quick"


@pytest.mark.parametrize("name, value, message", [
    # types: bool is not an int, a float is not an int, NaN and inf are no numbers
    ("iterations", True, "iterations must be an integer, got True"),
    ("iterations", 1000.0, "iterations must be an integer, got 1000.0"),
    ("iterations", "1000", "iterations must be an integer, got '1000'"),
    ("iterations", 2**63, "iterations must be at most 9223372036854775807"),
    ("batch_size", 0, "batch_size must be at least 1, got 0"),
    ("trials", 0, "trials must be at least 1, got 0"),
    ("eval_every", -5, "eval_every must be at least 1, got -5"),
    ("eval_batch_size", 0, "eval_batch_size must be at least 1"),
    ("rounds", -1, "rounds must be at least 0, got -1"),
    ("reinits", 1.5, "reinits must be an integer"),
    ("random_prunes", -1, "random_prunes must be at least 0"),
    ("rewind_iteration", None, "rewind_iteration must be an integer, got None"),
    ("val_size", -1, "val_size must be at least 0"),
    ("seed", -1, "seed must be an integer >= 0 (numpy.random.SeedSequence"),
    ("seed", 0.0, "seed must be an integer, got 0.0"),
    ("val_seed", -3, "val_seed must be an integer >= 0"),
    ("lr", float("inf"), "lr must be a finite number, got inf"),
    ("lr", float("nan"), "lr must be a finite number, got nan"),
    ("lr", 0.0, "lr must be > 0, got 0.0"),
    ("lr", 1e39, "lr must be > 0 and finite in float32"),
    ("lr", "0.1", "lr must be a number, got '0.1'"),
    ("lr", False, "lr must be a number, got False"),
    ("momentum", 1.0, "momentum must be in [0, 1), got 1.0"),
    ("momentum", 0.99999999999, "momentum must be in [0, 1) and finite in float32"),
    ("momentum", float("nan"), "momentum must be a finite number"),
    ("fc_rate", 1.0, "fc_rate must be in [0, 1), got 1.0"),
    ("conv_rate", -0.1, "conv_rate must be in [0, 1), got -0.1"),
    ("output_rate", float("nan"), "output_rate must be a finite number"),
    ("layer_rates", {"fc1": float("nan")}, "layer_rates['fc1'] must be a finite number"),
    ("layer_rates", {"fc1": 1.5}, "layer_rates['fc1'] must be in [0, 1), got 1.5"),
    ("layer_rates", {"fc1": "0.3"}, "layer_rates['fc1'] must be a number"),
    ("layer_rates", {3: 0.3}, "layer_rates must be keyed by layer names, got the key 3"),
    ("layer_rates", [("fc1", 0.3)], "layer_rates must be a dict of layer name -> rate"),
    ("one_shot", 1, "one_shot must be true or false, got 1"),
    ("one_shot", "false", "one_shot must be true or false"),
    ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'; choose from adam, sgd"),
    ("net", "resnet50", "unknown net 'resnet50'; choose from lenet"),
    ("preset", "fast", "unknown preset 'fast'; choose from quick, paper (or None)"),
])
def test_a_bad_setting_is_named_with_its_value(name, value, message):
    settings = {**dataclasses.asdict(lenet()), name: value}
    with pytest.raises(ConfigError) as info:
        Config(**settings)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("settings, message", [
    (dict(iterations=100, eval_every=50, rewind_iteration=101), "rewind_iteration 101 is beyond"),
    (dict(batch_size=55_001), "batch_size 55001 is more than the 55000 training examples of mnist"),
    (dict(batch_size=50_001, val_size=10_000), "batch_size 50001 is more than the 50000"),
    (dict(val_size=60_000), "val_size 60000 leaves no training examples: mnist has 60000"),
])
def test_settings_that_contradict_each_other_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        lenet(**settings)


def test_eval_every_beyond_the_budget_means_one_evaluation_at_the_end():
    """Allowed (train evaluates the last iteration whatever eval_every), and a Config
    of 10 iterations keeps the default eval_every of 100, as the coursework makes it."""
    assert lenet(iterations=20, eval_every=50).eval_every == 50


def test_the_whole_training_set_may_be_one_batch():
    assert lenet(batch_size=55_000).batch_size == 55_000
    assert make_config("conv2", batch_size=45_000).batch_size == 45_000


def test_numbers_are_kept_in_their_plain_form():
    config = lenet(lr=1, iterations=np.int64(300), layer_rates={"fc1": 0})
    assert type(config.lr) is float and type(config.iterations) is int
    assert config.layer_rates == {"fc1": 0.0} and type(config.layer_rates["fc1"]) is float


def test_validate_finds_a_setting_changed_after_construction():
    config = lenet(layer_rates={"fc1": 0.3})
    config.layer_rates["fc1"] = 2.0  # the one mutable setting
    with pytest.raises(ConfigError, match=r"layer_rates\['fc1'\] must be in \[0, 1\)"):
        config.validate()


INTEGER_SETTINGS = {"trials": 1, "rounds": 0, "reinits": 0, "random_prunes": 0,
                    "eval_batch_size": 1, "seed": 0, "val_seed": 0}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(INTEGER_SETTINGS)),
       value=st.one_of(st.integers(-10, 2**64), st.floats(allow_nan=True), st.booleans()))
def test_integer_settings_take_exactly_the_ints_in_their_range(name, value):
    low = INTEGER_SETTINGS[name]
    expected = type(value) is int and low <= value <= checks.INT64_MAX
    try:
        accepted = getattr(lenet(**{name: value}), name) == value
    except ConfigError:
        accepted = False
    assert accepted == expected


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["fc_rate", "conv_rate", "output_rate"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)))
def test_rates_take_exactly_the_numbers_in_0_to_1(name, value):
    expected = not (isinstance(value, float) and math.isnan(value)) and 0 <= value < 1
    try:
        accepted = getattr(lenet(**{name: value}), name) == value
    except ConfigError:
        accepted = False
    assert accepted == expected


# ---------------------------------------------------------------- config.json and its fingerprint

configs = st.builds(
    lambda iterations, lr, seed, rates, one_shot, optimizer, preset: make_config(
        "lenet", preset, iterations=iterations, eval_every=min(100, iterations), lr=lr, seed=seed,
        layer_rates=rates, one_shot=one_shot, optimizer=optimizer),
    iterations=st.integers(1, 10**9), lr=st.floats(1e-30, 1e30), seed=st.integers(0, 2**63 - 1),
    rates=st.dictionaries(st.sampled_from(["fc1", "fc2", "out"]), st.floats(0, 0.999)),
    one_shot=st.booleans(), optimizer=st.sampled_from(["adam", "sgd"]),
    preset=st.sampled_from(["quick", "paper"]))


@settings(max_examples=50, deadline=None)
@given(config=configs)
def test_to_json_and_from_json_round_trip(config):
    assert Config.from_json(config.to_json()) == config
    assert Config.from_json(config.to_json()).to_json() == config.to_json()


def stored(config=None):
    """config.json of ``config`` as a dict."""
    return json.loads((config or lenet(iterations=1000)).to_json())


def reseal(document):
    """config.json with its fingerprint recomputed: a file edited *and* resealed."""
    settings = {k: v for k, v in document.items() if k != "fingerprint"}
    line = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    import hashlib
    document = dict(settings, fingerprint={"settings": line,
                                           "sha256": hashlib.sha256(line.encode()).hexdigest()})
    return json.dumps(document)


@pytest.mark.parametrize("name, value, shown", [
    ("iterations", 500, "500"), ("iterations", "1000", '"1000"'), ("iterations", 1000.0, "1000.0"),
    ("lr", 0.1, "0.1"), ("one_shot", 0, "0"), ("preset", "paper", '"paper"'),
    ("layer_rates", {"fc1": 0.3}, '{"fc1":0.3}'), ("seed", None, "null"),
])
def test_an_edited_setting_is_named_with_both_values(name, value, shown):
    document = stored()
    original = json.dumps(document[name], separators=(",", ":"))
    document[name] = value
    with pytest.raises(ConfigError) as info:
        Config.from_json(json.dumps(document), source="run/config.json")
    assert str(info.value).startswith(f"run/config.json was edited by hand: {name} is {shown}, "
                                      f"the run was made with {original}")


def test_a_removed_or_added_setting_is_named():
    document = stored()
    del document["iterations"]
    document["learning_rate"] = 0.1
    with pytest.raises(ConfigError) as info:
        Config.from_json(json.dumps(document))
    message = str(info.value)
    assert "iterations was removed (the run was made with 1000)" in message
    assert "learning_rate was added (it is 0.1)" in message


def test_an_edit_of_value_and_fingerprint_alike_is_caught_by_the_sha256():
    text = lenet(iterations=1000).to_json().replace("1000", "500")  # a careless search-and-replace
    with pytest.raises(ConfigError, match="its fingerprint's settings no longer hash to its sha256"):
        Config.from_json(text)


@pytest.mark.parametrize("text, message", [
    ("{", "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a JSON object of settings, got list"),
    ('{"net": "lenet"}', "config.json has no fingerprint"),
    ('{"net": "lenet", "fingerprint": "abc"}', "config.json: the fingerprint must be"),
])
def test_a_file_that_is_no_config_json_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_json(text)


def test_a_resealed_file_still_obeys_the_rules():
    document = stored()
    document["iterations"] = 10.5
    with pytest.raises(ConfigError, match="config.json: iterations must be an integer, got 10.5"):
        Config.from_json(reseal(document))
    document = stored()
    del document["preset"]
    with pytest.raises(ConfigError, match=r"another version of minilottery: missing settings \['preset'\]"):
        Config.from_json(reseal(document))


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(lenet().to_json())
    assert load_config(path) == lenet()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'absent.json'}: cannot be read"):
        load_config(tmp_path / "absent.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="binary.json: not a text file"):
        load_config(tmp_path / "binary.json")
    document = stored(lenet())
    document["lr"] = 0.5
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=f"{path} was edited by hand: lr is 0.5"):
        load_config(path)


# ---------------------------------------------------------------- the command line

TINY = ["--iterations", "20", "--eval-every", "10", "--rounds", "1", "--trials", "1",
        "--reinits", "0", "--random-prunes", "0", "--fc-rate", "0.5", "--output-rate", "0.25",
        "--jobs", "1", "--no-plots"]


def run_cli(*args):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "minilottery.run", *map(str, args)],
                          capture_output=True, text=True, env=environment, timeout=300)


def assert_refused(result, message):
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) > 0


@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--lr", "0"], "lr must be > 0, got 0.0"),
    (["--lr", "1e39"], "lr must be > 0 and finite in float32"),
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--batch-size", "100000"], "batch_size 100000 is more than the 55000 training examples"),
    (["--rewind", "30"], "rewind_iteration 30 is beyond the training budget of 20 iterations"),
    (["--iterations", "10000000000000000000000"], "iterations must be at most 9223372036854775807"),
    (["--trials", "0"], "trials must be at least 1, got 0"),
    (["--optimizer", "sgd", "--momentum", "0.9999999999"], "momentum must be in [0, 1) and finite"),
    (["--rate", "fc1=nan"], "layer_rates['fc1'] must be a finite number"),
])
def test_bad_settings_give_one_line_exit_2_and_write_nothing(tmp_path, flags, message):
    result = run_cli("lenet", *TINY, *flags, "--out", tmp_path / "run")
    assert_refused(result, message)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    result = run_cli("lenet", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_after_config_json_was_edited_is_refused(run_copy):
    path = run_copy / "config.json"
    path.write_text(path.read_text().replace('"iterations": 20', '"iterations": 10'))
    before = snapshot(run_copy)
    result = run_cli("lenet", "--out", run_copy, "--resume", "--no-plots")
    assert_refused(result, f"{path} was edited by hand: iterations is 10, the run was made with 20")
    assert snapshot(run_copy) == before


def test_resume_with_a_malformed_config_json_is_refused(run_copy):
    path = run_copy / "config.json"
    document = json.loads(path.read_text())
    del document["batch_size"]
    path.write_text(json.dumps(document))
    result = run_cli("lenet", "--out", run_copy, "--resume", "--no-plots")
    assert_refused(result, f"{path} was edited by hand: batch_size was removed")


@pytest.mark.parametrize("flags, message", [
    (["--preset", "paper"], "preset is 'quick' there, 'paper' asked"),
    (["--iterations", "40"], "iterations is 20 there, 40 asked"),
    (["--iterations", "40", "--lr", "0.1"], "iterations is 20 there, 40 asked; lr is 0.0012 there, 0.1 asked"),
])
def test_resume_with_other_settings_names_each_one(run_copy, flags, message):
    before = snapshot(run_copy)
    result = run_cli("lenet", "--out", run_copy, "--resume", "--no-plots", *flags)
    assert_refused(result, message)
    assert snapshot(run_copy) == before


def test_resume_with_the_stored_settings_is_accepted(run_copy):
    result = run_cli("lenet", "--out", run_copy, "--resume", "--no-plots", "--preset", "quick",
                     "--iterations", "20", "--fc-rate", "0.5")
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout


# ---------------------------------------------------------------- the conv quick presets

@pytest.mark.parametrize("net, most", [("conv2", 0.10), ("conv4", 0.15), ("conv6", 0.15),
                                       ("conv2-dropout", 0.10), ("conv4-dropout", 0.15),
                                       ("conv6-dropout", 0.15)])
def test_the_conv_quick_presets_reach_the_papers_sparsest_tickets(net, most):
    """The last round keeps at most 10% (Conv-2) or 15% (Conv-4/6) of the weights,
    counted through the lottery's own rate map and the exact per-round rule."""
    from minilottery.lottery import pruning_rates
    from minilottery.pieces import build_model
    from minilottery.pruning import kept_after_rounds

    config = make_config(net)
    model = build_model(config, seed=0)
    sizes = {f"{layer.name}.{key}": layer.params[key].size
             for layer in model.layers for key in layer.masks}
    rates = pruning_rates(config, model)
    assert set(rates) == set(sizes)
    kept = sum(kept_after_rounds(sizes[name], rate, config.rounds) for name, rate in rates.items())
    assert most / 3 < kept / sum(sizes.values()) <= most   # and not far sparser than needed


@pytest.mark.parametrize("net", ["conv2", "conv4", "conv6"])
def test_conv_and_output_layers_keep_what_the_papers_keep_at_the_same_fc_sparsity(net):
    """After the quick preset's rounds, each group of layers keeps (to the rounding of
    its rate) what it keeps in the paper's schedule once the paper's fc layers are
    as sparse: the quick preset takes the paper's path in a few big steps."""
    quick, paper = make_config(net), make_config(net, "paper")
    fc_kept = (1 - quick.fc_rate) ** quick.rounds
    paper_rounds = math.log(fc_kept) / math.log(1 - paper.fc_rate)
    for group in ("conv_rate", "output_rate"):
        quick_kept = (1 - getattr(quick, group)) ** quick.rounds
        paper_kept = (1 - getattr(paper, group)) ** paper_rounds
        assert quick_kept == pytest.approx(paper_kept, rel=0.05), group
