"""A bad TOML config through `tlbench run --config`: an error naming the file, the key and
the expected type, before anything loads or trains, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagetree import assert_clean_error


def run_with(run_cli, tmp_path: Path, toml: str, *flags: str):
    config = tmp_path / "grid.toml"
    config.write_text(toml)
    out = tmp_path / "results.jsonl"
    result = run_cli(
        "run", "--config", str(config), "--datasets", "tinyset", "--backbones", "tiny",
        "--device", "cpu", "--no-cache", "--quiet", "--out", str(out), *flags,
    )  # fmt: skip
    assert not out.exists(), "something ran despite the bad config"
    return result, str(config)


def test_invalid_toml_names_the_file_and_the_line(run_cli, tmp_path):
    result, config = run_with(run_cli, tmp_path, 'epochs = 3\nstrategies = = ["linear"]\n')
    assert_clean_error(result, config, "is not valid TOML", "line 2")


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ('epochs = "ten"', "epochs", "expected int"),
        ("lr = true", "lr", "expected float"),
        ("[hyperparameters]\nbatch_size = 1.5", "batch_size", "expected int"),
        ('[strategy.linear]\nlabel_smoothing = "a bit"', "label_smoothing", "expected float"),
        ('image_size = "224px"', "image_size", "expected int"),
        ('seeds = [0, "one"]', "seeds[1]", "expected int"),
        ('strict = "yes"', "strict", "expected bool"),
        ("backbones = 3.5", "backbones", "expected str"),
        ('backbones = {name = "tiny"}', "backbones", "expected a list of str"),
    ],
)
def test_wrong_value_type_names_file_key_and_expected_type(run_cli, tmp_path, toml, key, expected):
    result, config = run_with(run_cli, tmp_path, toml)
    assert_clean_error(result, config, key, expected)


def test_strategy_table_error_names_the_key(run_cli, tmp_path):
    result, config = run_with(run_cli, tmp_path, '[strategy.finetune]\nepochs = "many"')
    assert_clean_error(result, config, "epochs", "expected int, got str 'many'")


def test_table_names_in_brackets_survive_in_the_message(run_cli, tmp_path):
    result, config = run_with(run_cli, tmp_path, '[strategy.finetune]\nepochs = "many"')
    assert_clean_error(result, config, "[strategy.finetune]")
    result, config = run_with(run_cli, tmp_path, "hyperparameters = 3")
    assert_clean_error(result, config, "[hyperparameters] must be a table")


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("epoch = 3", ["unknown key 'epoch'", "Did you mean 'epochs'?"]),
        ("[hyperparameters]\nlearning_rate = 0.1", ["unknown hyperparameter 'learning_rate'"]),
        ("hyperparameters = 3", ["must be a table"]),
        ("[strategy]\nlinear = 3", ["must be a table"]),
    ],
)
def test_unknown_keys_and_misplaced_tables_are_rejected(run_cli, tmp_path, toml, fragments):
    result, config = run_with(run_cli, tmp_path, toml)
    assert_clean_error(result, config, *fragments)


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("batch_size = 0", ["batch_size", ">= 1", "0"]),
        ("epochs = -2", ["epochs", ">= 1"]),
        ('optimizer = "adam"', ["optimizer", "adamw, sgd", "'adam'"]),
        ("test_fraction = 1.5", ["test_fraction", "between 0 and 1"]),
    ],
)
def test_values_the_training_loop_would_refuse(run_cli, tmp_path, toml, fragments):
    result, config = run_with(run_cli, tmp_path, toml)
    assert_clean_error(result, config, *fragments)


def test_missing_config_file(run_cli, tmp_path):
    missing = tmp_path / "nope.toml"
    result = run_cli("run", "--config", str(missing), "--out", str(tmp_path / "r.jsonl"))
    assert_clean_error(result, str(missing), "does not exist")


def test_a_config_that_is_not_text(run_cli, tmp_path):
    config = tmp_path / "grid.toml"
    config.write_bytes(b"\xff\xfe\x00binary")
    result = run_cli("run", "--config", str(config), "--out", str(tmp_path / "r.jsonl"))
    assert_clean_error(result, str(config))
    assert not (tmp_path / "r.jsonl").exists()


def test_wrong_flag_type_is_a_usage_error(run_cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("run", "--epochs", "ten", "--out", str(tmp_path / "r.jsonl"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --epochs: invalid int value: 'ten'" in err
    assert "Traceback" not in err
