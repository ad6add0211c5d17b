"""`--test-fraction`, once `--val-fraction` (issue 21): the share of each class of a
single-folder dataset held out as its TEST split. The old name said "validation"
while tuning has a real validation split (`--validation-fraction`), so it was
renamed; for one release the old flag, config key, keyword and plugin attribute
still work, warn with the new name, and giving both names is an error."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from imagetree import assert_clean_error, make_split

from tlbench import cli
from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.commands.run import config_from_args
from tlbench.config import RENAMED, load_config_file, make_config
from tlbench.errors import ConfigError
from tlbench.plan import workspace_for
from tlbench.plugin_types import DatasetRequest, Workspace
from tlbench.python_api import config_from_keywords

GRID = ["run", "--backbones", "tiny", "--datasets", "tinyset", "--strategies", "linear"]


def parsed(*flags: str):
    return config_from_args(cli.build_parser().parse_args(["run", *flags]))


def renamed_warning(record: pytest.WarningsRecorder) -> str:
    (warning,) = [w for w in record if w.category is DeprecationWarning]
    return str(warning.message)


def test_the_new_flag_sets_the_test_fraction_the_dataset_is_split_by():
    config = parsed("--test-fraction", "0.3")
    assert config.test_fraction == 0.3
    assert workspace_for(config).test_fraction == 0.3  # what a trial asks the dataset for


def test_help_tells_the_test_split_from_tuning_validation_split(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--test-fraction F fraction of each class of a single-folder dataset" in help_text
    assert "held out as its TEST split (default 0.1); not tuning's validation split" in help_text
    assert "--validation-fraction F fraction of each class of the TRAINING split" in help_text
    assert "--val-fraction" not in help_text  # parsed for one release, no longer offered


def test_the_old_flag_means_the_same_and_warns_with_the_new_name():
    with pytest.warns(DeprecationWarning) as record:
        old = parsed("--val-fraction", "0.3")
    assert old == parsed("--test-fraction", "0.3")
    assert renamed_warning(record) == (
        "--val-fraction is renamed --test-fraction; use --test-fraction, the old name goes in "
        "the next release"
    )


def test_the_old_flag_on_the_command_line_is_one_warning_line(run_cli, tmp_path):
    result = run_cli(*GRID, "--val-fraction", "0.3", "--out", tmp_path / "r.jsonl", "--dry-run")
    assert result.code == 0, result
    assert result.err.splitlines() == [
        "warning: --val-fraction is renamed --test-fraction; use --test-fraction, the old name "
        "goes in the next release"
    ]


def test_both_flags_are_an_error_naming_both(run_cli, tmp_path):
    result = run_cli(
        *GRID, "--val-fraction", "0.3", "--test-fraction", "0.3", "--out", tmp_path / "r.jsonl"
    )
    assert_clean_error(result, "--val-fraction and --test-fraction are the same setting")
    assert "give only --test-fraction" in result.err
    assert not (tmp_path / "r.jsonl").exists()


def test_the_old_config_key_means_the_same_and_warns_naming_the_file(tmp_path: Path):
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text("val_fraction = 0.3\n")
    new.write_text("test_fraction = 0.3\n")
    with pytest.warns(DeprecationWarning) as record:
        from_old = make_config(old)
    assert from_old.test_fraction == make_config(new).test_fraction == 0.3
    assert renamed_warning(record).startswith(f"{old}: val_fraction is renamed test_fraction;")
    # The old key is checked like the new one, under its new name.
    old.write_text("val_fraction = 1.5\n")
    out_of_range = r"test_fraction must be between 0 and 1, not 1\.5"
    with pytest.raises(ConfigError, match=out_of_range), pytest.warns(DeprecationWarning):
        load_config_file(old)


def test_both_config_keys_are_an_error_naming_both_and_the_file(tmp_path: Path):
    path = tmp_path / "grid.toml"
    path.write_text("val_fraction = 0.3\ntest_fraction = 0.3\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == (
        f"{path}: val_fraction and test_fraction are the same setting (val_fraction is its old "
        "name), given twice; give only test_fraction"
    )


def test_a_flag_beats_the_old_key_of_the_file(tmp_path: Path):
    path = tmp_path / "grid.toml"
    path.write_text("val_fraction = 0.3\n")
    with pytest.warns(DeprecationWarning):
        assert make_config(path, test_fraction=0.4).test_fraction == 0.4


def test_the_old_keyword_means_the_same_and_warns_where_it_was_written():
    with pytest.warns(DeprecationWarning) as record:
        old = config_from_keywords(None, None, {"val_fraction": 0.3}, "tlbench.select")
    assert old == config_from_keywords(None, None, {"test_fraction": 0.3}, "tlbench.select")
    assert renamed_warning(record) == (
        "tlbench.select(): val_fraction= is renamed test_fraction=; use test_fraction=, the old "
        "name goes in the next release"
    )
    # Python shows a DeprecationWarning only when it points at the caller's code, not ours.
    assert record[0].filename == __file__


def test_both_keywords_are_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"val_fraction= and test_fraction= are the same"):
        config_from_keywords(None, None, {"val_fraction": 0.3, "test_fraction": 0.2})


def test_every_old_name_renames_a_setting_that_exists():
    settings = make_config()
    for old, new in RENAMED.items():
        assert hasattr(settings, new) and not hasattr(settings, old)


# --------------------------------------------------------------------------- plugin API


def test_a_plugin_reading_the_old_attribute_gets_the_test_fraction_and_a_warning(tmp_path):
    request = DatasetRequest(argument=None, data_dir=tmp_path, test_fraction=0.3)
    with pytest.warns(DeprecationWarning) as record:
        assert request.val_fraction == 0.3
    assert renamed_warning(record) == (
        "DatasetRequest.val_fraction is renamed test_fraction; use test_fraction, the old "
        "name goes in the next release"
    )
    assert record[0].filename == __file__  # points at the plugin's line that read it


def test_the_old_constructor_keyword_builds_the_same_request(tmp_path):
    root = make_split(tmp_path / "flat", 4)
    with pytest.warns(
        DeprecationWarning, match=r"DatasetRequest\(val_fraction=\) is renamed"
    ) as seen:
        old = DatasetRequest(str(root), tmp_path, val_fraction=0.5, split_seed=1)
    assert seen[0].filename == __file__  # the plugin's line, where Python shows it
    new = DatasetRequest(str(root), tmp_path, test_fraction=0.5, split_seed=1)
    assert old == new
    held_old, held_new = load_imagefolder(old).eval, load_imagefolder(new).eval
    assert held_old.paths == held_new.paths and len(held_new) == 6  # half of 3 x 4
    with pytest.raises(TypeError, match="got test_fraction= and val_fraction=, its old name"):
        DatasetRequest(str(root), tmp_path, test_fraction=0.5, val_fraction=0.5)


def test_the_workspace_answers_to_the_old_name_with_a_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"Workspace\(val_fraction=\) is renamed"):
        workspace = Workspace(cache_dir=None, data_dir=tmp_path, val_fraction=0.3)
    with pytest.warns(DeprecationWarning, match=r"Workspace\.val_fraction is renamed"):
        assert workspace.test_fraction == workspace.val_fraction == 0.3


def test_the_core_never_uses_the_old_name(plugins, tiny_config):
    """A real run builds its workspace and dataset request with the new name only: a
    DeprecationWarning there would be the core's, shown to every plugin's user."""
    from tlbench.runner import Runner

    tiny_config.strategies = ["linear"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*val_fraction", category=DeprecationWarning)
        (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok"
