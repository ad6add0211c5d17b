"""Strategy options (issue 24, item 3): a strategy declares typed settings with defaults.

`[strategy."lastn:3"] decay = 0.3` was refused as an unknown hyperparameter, and a
setting could only hide in the strategy's name. Now an option is set from a config
file, the command line and `tlbench.run()`, checked against what the strategy
declares (an unknown name or a wrong type fails before training, naming the valid
options), recorded and part of the key when it differs from its default; at its
default the key is the one the strategy had before it had options. A plugin's own
`LookupError` message from `Family.resolve` reaches the user intact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import tlbench
from tlbench import testing
from tlbench.cli import main
from tlbench.config import RunConfig, check_strategy_tables, make_config
from tlbench.errors import ConfigError, UnknownNameError
from tlbench.results import read
from tlbench.runner import Runner


def tiny_grid(tmp_path: Path, **changes) -> RunConfig:
    return RunConfig(
        **{
            "backbones": ["tiny"],
            "datasets": ["tinyset"],
            "strategies": ["llrd"],
            "seeds": [0],
            "image_size": 16,
            "hyperparameters": {"epochs": 1, "batch_size": 16},
            "out": str(tmp_path / "runs.jsonl"),
            "cache_dir": str(tmp_path / "cache"),
            "device": "cpu",
            **changes,
        }
    )


def planned(plugins, config: RunConfig):
    (run,) = Runner(config, plugins).plan()
    return run.spec


def test_an_option_from_a_config_file_is_typed_recorded_and_keyed(tmp_path, plugins):
    path = tmp_path / "grid.toml"
    path.write_text('[strategy."llrd"]\ndecay = 0.3\nepochs = 2\n')
    config = make_config(path)
    assert config.strategy_options == {"llrd": {"decay": 0.3}}
    assert config.strategy_overrides == {"llrd": {"epochs": 2}}
    check_strategy_tables(config, plugins.strategies.names(), plugins.strategies.get)
    spec = planned(plugins, tiny_grid(tmp_path, strategy_options=config.strategy_options))
    default = planned(plugins, tiny_grid(tmp_path))
    assert spec.options == {"decay": 0.3} and spec.config()["options"] == {"decay": 0.3}
    assert default.options is None and "options" not in default.config()
    assert spec.key != default.key
    # Set to its default, an option changes nothing: the key is the option-less one.
    same = planned(plugins, tiny_grid(tmp_path, strategy_options={"llrd": {"decay": 0.75}}))
    assert same.key == default.key


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("decy = 0.3", ["unknown hyperparameter or option 'decy'", "Did you mean 'decay'?"]),
        ('decay = "steep"', ["option 'decay' takes a number, not str 'steep'"]),
        ("decay = 3.0", ["option 'decay' must be in [0.0, 1.0], not 3.0"]),
        ("freeze_bn = 1", ["option 'freeze_bn' takes true or false, not int 1"]),
    ],
)
def test_a_bad_option_in_a_config_file_names_the_valid_ones(tmp_path, plugins, table, expected):
    path = tmp_path / "grid.toml"
    path.write_text(f"[strategy.llrd]\n{table}\n")
    config = make_config(path)
    with pytest.raises(ConfigError) as info:
        check_strategy_tables(config, plugins.strategies.names(), plugins.strategies.get)
    message = str(info.value)
    for part in [*expected, str(path), "[strategy.llrd]"]:
        assert part in message
    if "unknown" in expected[0]:
        assert "decay (float, default 0.75)" in message and "freeze_bn (bool" in message


def test_a_misspelt_hyperparameter_in_a_strategy_table_is_still_named(tmp_path, plugins):
    path = tmp_path / "grid.toml"
    path.write_text("[strategy.finetune]\nbackbone_lr_mul = 0.1\n")
    with pytest.raises(ConfigError) as info:
        check_strategy_tables(make_config(path), plugins.strategies.names(), plugins.strategies.get)
    assert (
        "[strategy.finetune]: unknown hyperparameter or option 'backbone_lr_mul'. "
        "Did you mean 'backbone_lr_mult'?"
    ) in str(info.value)
    assert str(path) in str(info.value)


def test_an_option_on_the_command_line_is_accepted_and_a_bad_one_refused(
    tmp_path, tiny_cli, capsys
):
    out = tmp_path / "runs.jsonl"
    common = [
        "run", "--backbones", "tiny", "--datasets", "tinyset", "--strategies", "llrd",
        "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q",
    ]  # fmt: skip
    assert main([*common, "--strategy-option", "llrd.decay=abc"]) == 2
    err = capsys.readouterr().err
    assert "option 'decay' takes a number, not str 'abc'" in err
    assert not out.exists()
    assert main([*common, "--strategy-option", "llrd.dekay=0.5"]) == 2
    assert "Did you mean 'decay'?" in capsys.readouterr().err
    argv = [
        *common,
        "--strategy-option",
        "llrd.decay=0.5",
        "--strategy-option",
        "llrd.freeze_bn=true",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    (record,) = read(out)
    assert record["status"] == "ok"
    assert record["config"]["options"] == {"decay": 0.5, "freeze_bn": True}


def test_a_flag_beats_the_files_option(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("[strategy.llrd]\ndecay = 0.3\nfreeze_bn = true\n")
    config = make_config(path, strategy_options=[{"llrd": {"decay": "0.6"}}])
    assert config.strategy_options == {"llrd": {"decay": "0.6", "freeze_bn": True}}


def test_an_option_from_python_is_accepted_and_a_bad_one_refused(tmp_path, plugins):
    common = {
        "backbones": ["tiny"], "datasets": ["tinyset"], "strategies": ["llrd"],
        "image_size": 16, "epochs": 1, "batch_size": 16, "device": "cpu",
        "cache_dir": str(tmp_path / "cache"), "progress": False, "plugins": plugins,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="strategy 'llrd' has no option 'depth'"):
        tlbench.run(strategy_options={"llrd": {"depth": 2}}, **common)
    with pytest.raises(ConfigError, match="expected a table"):
        tlbench.run(strategy_options={"llrd": 0.5}, **common)
    results = tlbench.run(strategy_options={"llrd": {"decay": 0.5}}, **common)
    (record,) = list(results)
    assert record["status"] == "ok" and record["config"]["options"] == {"decay": 0.5}


class LastN:
    """A family whose resolve explains, in its own words, what it takes."""

    @tlbench.hookimpl
    def tlbench_register_strategies(self, register):
        def resolve(argument: str):
            if not argument.isdigit():
                raise LookupError(
                    f"lastn takes a number of stages, like lastn:3 (got {argument!r})"
                )
            return dataclasses.replace(tlbench.FINETUNE, name=f"lastn:{argument}")

        register(tlbench.Family("lastn", resolve, members=lambda: ["1", "2", "3"]))


def test_a_plugins_lookup_error_reaches_the_user_intact():
    plugins = testing.load_plugins([LastN()], builtins=False)
    with pytest.raises(UnknownNameError) as info:
        plugins.strategies.get("lastn:three")
    message = str(info.value)
    assert "lastn takes a number of stages, like lastn:3 (got 'three')" in message
    assert message.startswith("unknown strategy 'lastn:three'")
    # A bare LookupError (the name alone) still gets the close matches.
    with pytest.raises(UnknownNameError, match=r"unknown strategy 'tmm:x'\."):
        testing.load_plugins([LastN()]).strategies.get("tmm:x")
