"""The options of a grid are declared once (RunConfig's field metadata and
HYPERPARAMETER_OPTIONS), and the parser of `run` and `select`, the config-file
reader, the help defaults and `tlbench.run()`'s keywords are all made from them
(issue 23): each setting is accepted, with the same name, by all four."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import tlbench
from tlbench import cli, config
from tlbench.commands.run import config_from_args
from tlbench.plugin_types import Hyperparameters

SETTINGS = config.options()
NOT_SETTINGS = {"hyperparameters", "strategy_overrides", "source"}


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


def test_every_setting_and_every_hyperparameter_is_declared_once():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(config.RunConfig)} - NOT_SETTINGS
    hyperparameters = {f.name for f in dataclasses.fields(Hyperparameters)}
    assert set(names) == fields | hyperparameters
    assert fields == config.SETTINGS
    assert {s.option.group for s in SETTINGS} <= set(config.GROUPS)


@pytest.mark.parametrize("command", ["run", "select"])
def test_the_parser_offers_every_setting_under_its_name(command):
    actions = _actions(command)
    for setting in SETTINGS:
        action = actions[setting.name]
        flag = setting.option.flag or "--" + setting.name.replace("_", "-")
        assert flag in action.option_strings
        assert action.default is None  # "not given": the file, then the default, decide
        assert "default" in action.help
        if setting.name in config.CHOICES:
            assert tuple(action.choices) == config.CHOICES[setting.name]
    assert actions["retry_oom"].option_strings == ["--no-retry"]
    assert "--no-nesterov" in actions["nesterov"].option_strings
    assert actions["device"].type is config.device_arg
    # Help defaults come from the declaration: the field's default, or the strategy's own.
    assert actions["out"].help.endswith("(default: results/runs.jsonl)")
    assert actions["strategies"].help.endswith("(default: scratch,linear,finetune)")
    assert actions["lr"].help.endswith("(default: each strategy's own)")
    assert actions["compile"].help.endswith("(default: off)")


def test_flags_reach_the_config_by_the_same_names():
    args = cli.build_parser().parse_args(
        [
            "run", "--epochs", "3", "--no-retry", "--shots", "1,5", "--device", "cuda:1",
            "--no-augment", "--precision", "fp32", "--train-fraction", "0.5",
        ]
    )  # fmt: skip
    made = config_from_args(args)
    assert made.hyperparameters == {"epochs": 3, "augment": False}
    assert (made.retry_oom, made.shots, made.device) == (False, ["1", "5"], "cuda:1")
    assert (made.precision, made.train_fraction) == ("fp32", [0.5])
    untouched = config_from_args(cli.build_parser().parse_args(["run"]))
    assert untouched == config.RunConfig()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_every_setting_is_a_config_file_key_and_a_python_keyword(tmp_path):
    values = {}
    for setting in SETTINGS:
        if setting.hyperparameter:
            values[setting.name] = getattr(Hyperparameters(), setting.name)
        elif setting.default not in (None, []):
            values[setting.name] = setting.default
    path = tmp_path / "grid.toml"
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))
    loaded = config.load_config_file(path)
    for key, value in values.items():
        assert (loaded["hyperparameters"] if key in config.HP_FIELDS else loaded)[key] == value
    assert tlbench.run_options() == sorted(
        {s.name for s in SETTINGS} | {"config", "progress", "plugins"}
    )


def test_an_unknown_keyword_names_the_close_setting():
    with pytest.raises(TypeError, match="Did you mean 'batch_size'"):
        tlbench.run(batch_sise=4, progress=False)
