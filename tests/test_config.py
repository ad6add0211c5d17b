"""Config files: typed, unknown keys rejected with the key and file named, flags win."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

import tlbench
import tlbench.plugins
from tlbench.cli import main
from tlbench.config import check_strategy_tables, load_config_file, make_config
from tlbench.errors import ConfigError
from tlbench.plugin_types import Hyperparameters

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_misspelt_top_level_key_names_the_key_the_file_and_the_fix(tmp_path):
    path = write(tmp_path, 'backbones = ["tiny"]\nepoch = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown key 'epoch'" in message
    assert "Did you mean 'epochs'?" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[hyperparameters]\nlearning_rate = 0.1\n",
            "[hyperparameters]: unknown hyperparameter 'learning_rate'",
        ),
        # A misspelt key of a [strategy.<name>] table may be one of the strategy's options:
        # it is checked once plugins load (tests/test_strategy_options.py).
        ('epochs = "ten"\n', "epochs: expected int, got str 'ten'"),
        ("seeds = [0, 1.5]\n", "seeds[1]: expected int"),
        ("augment = 1\n", "augment: expected bool"),
        ('optimizer = "sdg"\n', "optimizer must be one of adamw, sgd, lbfgs, not 'sdg'"),
        ("[strategy.linear]\nepochs = 0\n", "[strategy.linear]: epochs must be >= 1, not 0"),
        ("lr = -0.1\n", "lr must be > 0.0"),
        ("test_fraction = 1.5\n", "test_fraction must be between 0 and 1"),
        ('precision = "fp64"\n', "precision must be one of auto, fp32, tf32, bf16, fp16"),
        ("hyperparameters = 3\n", "[hyperparameters] must be a table"),
        (
            "lr = 0.1\n[hyperparameters]\nlr = 0.2\n",
            "'lr' is set both at the top level and in [hyperparameters]",
        ),
        ("backbones = [\n", "is not valid TOML"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_a_binary_file_is_a_config_error(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="is not a UTF-8 text file"):
        load_config_file(path)


def test_cli_prints_table_names_literally(tmp_path, tiny_cli, capsys):
    path = write(tmp_path, '[strategy.finetune]\nepochs = "many"\n')
    assert main(["run", "--config", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "[strategy.finetune]: epochs: expected int" in err  # not eaten as rich markup


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(tmp_path / "nope.toml")


def test_typed_values_and_friendly_forms(tmp_path):
    path = write(
        tmp_path,
        'backbones = "tiny, tiny_random"\nseeds = 3\nimage_size = 32\nlr = 1\n'
        "[strategy.linear]\nepochs = 4\n",
    )
    config = make_config(path)
    assert config.backbones == ["tiny", "tiny_random"]
    assert config.seeds == [3]
    assert config.image_size == 32
    assert config.hyperparameters == {"lr": 1.0} and isinstance(config.hyperparameters["lr"], float)
    assert config.strategy_overrides == {"linear": {"epochs": 4}}
    assert config.source == str(path)


def test_precedence_defaults_then_file_then_strategy_table_then_flags(tmp_path):
    path = write(
        tmp_path,
        "lr = 0.01\nepochs = 7\n[strategy.finetune]\nlr = 0.005\nbatch_size = 8\n",
    )
    defaults = Hyperparameters(lr=0.5, epochs=1, batch_size=64, weight_decay=0.3)

    config = make_config(path)
    finetune = config.hyperparameters_for("finetune", defaults)
    scratch = config.hyperparameters_for("scratch", defaults)
    assert (finetune.lr, finetune.epochs, finetune.batch_size, finetune.weight_decay) == (
        0.005,
        7,
        8,
        0.3,
    )
    assert (scratch.lr, scratch.epochs, scratch.batch_size) == (0.01, 7, 64)

    flagged = make_config(path, lr=0.1, batch_size=None, seeds=[5])
    assert flagged.hyperparameters_for("finetune", defaults).lr == 0.1  # the flag beats the table
    assert (
        flagged.hyperparameters_for("finetune", defaults).batch_size == 8
    )  # not given: the file's
    assert flagged.hyperparameters_for("scratch", defaults).lr == 0.1
    assert flagged.seeds == [5]


def test_flag_values_are_checked_too():
    with pytest.raises(ConfigError, match="--epochs: epochs must be >= 1"):
        make_config(epochs=0)


def test_strategy_table_for_an_unknown_strategy_is_rejected(tmp_path):
    path = write(tmp_path, "[strategy.fintune]\nepochs = 3\n")
    config = make_config(path)
    with pytest.raises(ConfigError) as info:
        check_strategy_tables(config, ["scratch", "linear", "finetune"])
    assert "[strategy.fintune]" in str(info.value)
    assert "Did you mean 'finetune'?" in str(info.value)
    assert str(path) in str(info.value)


def test_cli_misspelt_key_fails_before_any_training(tmp_path, tiny_cli, capsys):
    out = tmp_path / "runs.jsonl"
    path = write(
        tmp_path,
        f'backbones = ["tiny"]\ndatasets = ["tinyset"]\nout = "{out}"\nlearning_rate = 0.1\n',
    )
    assert main(["run", "--config", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rate'" in err and str(path) in err.replace("\n", "")
    assert not out.exists()


def test_cli_misspelt_strategy_table_fails_before_any_training(tmp_path, tiny_cli, capsys):
    out = tmp_path / "runs.jsonl"
    path = write(
        tmp_path,
        f'backbones = ["tiny"]\ndatasets = ["tinyset"]\nout = "{out}"\n[strategy.fintune]\nepochs = 1\n',
    )
    assert main(["run", "--config", str(path), "--device", "cpu"]) == 2
    assert "unknown strategy 'fintune'" in capsys.readouterr().err
    assert not out.exists()


def test_cli_flags_override_the_file(tmp_path, tiny_cli, capsys):
    out = tmp_path / "runs.jsonl"
    path = write(
        tmp_path,
        f'backbones = ["tiny"]\ndatasets = ["tinyset"]\nstrategies = ["scratch", "linear"]\n'
        f'image_size = 16\nout = "{out}"\ncache_dir = "{tmp_path / "cache"}"\n'
        "epochs = 3\nbatch_size = 16\n[strategy.linear]\nepochs = 4\n",
    )
    code = main(
        [
            "run",
            "--config",
            str(path),
            "--strategies",
            "linear",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert code == 0
    (record,) = tlbench.results.read(out)
    assert record["config"]["strategy"] == "linear"
    assert record["config"]["hyperparameters"]["epochs"] == 1
    assert record["config"]["hyperparameters"]["batch_size"] == 16


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_load_and_name_registered_plugins(path):
    config = make_config(path)
    plugins = tlbench.Plugins(entry_points=False)
    for name in config.backbones:
        plugins.backbones.get(name)
    for name in config.strategies:
        plugins.strategies.get(name)
    for name in config.datasets:
        plugins.dataset(name)
    check_strategy_tables(config, plugins.strategies.names())
    assert config.out.startswith("results/")


def test_the_tutorial_scenarios_are_shipped():
    by_name = {p.name: make_config(p) for p in EXAMPLES}
    ants = by_name["hymenoptera_resnet18.toml"]
    assert ants.backbones == ["resnet18"] and {"linear", "finetune"} <= set(ants.strategies)
    hp = ants.hyperparameters_for("finetune", Hyperparameters())
    assert (hp.optimizer, hp.momentum, hp.nesterov, hp.schedule, hp.step_size, hp.gamma) == (
        "sgd",
        0.9,
        False,  # the tutorial's torch.optim.SGD(momentum=0.9): plain momentum
        "step",
        7,
        0.1,
    )
    flowers = by_name["flowers5_resnet50.toml"]
    assert flowers.backbones == ["resnet50"] and set(flowers.strategies) == {"linear", "finetune"}
    cats = by_name["catsdogs_cnn_vs_resnet101.toml"]
    assert set(cats.backbones) == {"small_cnn", "resnet101"} and set(cats.strategies) == {
        "scratch",
        "linear",
    }
