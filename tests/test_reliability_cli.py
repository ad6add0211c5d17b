"""The command line with hostile values, paths and names (issue 13, items 5, 10, 12 and 14).

Numbers out of range fail before any work with their valid range; paths and
names with rich markup characters print as they are; `--plot` and `--grid`
write exactly the file they print, and a place that cannot take it is an
error before any work; a comma inside a dataset path can be written.
"""

from __future__ import annotations

import os

import pytest
import torch
from imagetree import assert_clean_error, make_tree

from tlbench import cli, predict, results
from tlbench.errors import TlbenchError

PNG = b"\x89PNG\r\n\x1a\n"


def ok_record(key: str = "k", strategy: str = "linear") -> dict:
    return {
        "schema": 2,
        "key": key,
        "status": "ok",
        "reason": None,
        "time": "2026-11-30T06:00:00+00:00",
        "config": {"backbone": "tiny", "dataset": "tinyset", "strategy": strategy, "seed": 0},
        "accuracy": {
            "final": 0.5,
            "best": 0.5,
            "best_epoch": 1,
            "curve": [{"epoch": 1, "eval_accuracy": 0.5}],
        },
        "cost": {"train_seconds": 1.0},
    }


# --------------------------------------------------------------------------- item 5


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "inf", "lr must be <= 10, not inf (valid: > 0 and <= 10)"),
        ("--lr", "1e300", "lr must be <= 10, not 1e+300"),
        ("--lr", "nan", "lr must be a number (valid: > 0 and <= 10), not nan"),
        ("--seeds", "12345678901234567890", "a seed must be between 0 and 4294967295"),
        ("--seeds", "0,-1", "not -1"),
        ("--image-size", "10000", "image_size must be <= 2048, not 10000"),
        ("--batch-size", "1000000", "batch_size must be <= 65536"),
        ("--epochs", "0", "epochs must be >= 1, not 0 (valid: >= 1 and <= 100000)"),
        ("--momentum", "1", "momentum must be < 1"),
        ("--weight-decay", "-inf", "weight_decay must be >= 0"),
        ("--label-smoothing", "nan", "label_smoothing must be a number"),
        ("--gamma", "1e309", "gamma must be <= 10, not inf"),
    ],
)
def test_every_numeric_option_is_checked_before_any_work_with_its_range(
    run_cli, tmp_path, flag, value, message
):
    out = tmp_path / "runs.jsonl"
    # A dataset that does not exist: the value must be refused before anything is loaded.
    result = run_cli("run", "--datasets", f"imagefolder:{tmp_path / 'missing'}", f"{flag}={value}",
                     "--out", out, "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert_clean_error(result, message)
    assert "does not exist" not in result.err
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr = inf", "lr must be <= 10, not inf"),
        ("lr = nan", "lr must be a number"),
        ("seeds = [12345678901234567890]", "a seed must be between 0 and 4294967295"),
        ("image_size = 10000", "image_size must be <= 2048"),
        ("[strategy.linear]\nbatch_size = 100000000", "batch_size must be <= 65536"),
        ("lr = 1" + "0" * 400, "too large for a number"),
    ],
)
def test_config_file_values_out_of_range_name_the_file_and_the_range(
    run_cli, tmp_path, text, message
):
    config = tmp_path / "grid.toml"
    config.write_text(text + "\n")
    result = run_cli("run", "--config", config, "--out", tmp_path / "runs.jsonl")
    assert_clean_error(result, "grid.toml", message)


# --------------------------------------------------------------------------- items 10 and 12: report


@pytest.mark.parametrize("name", ["[/]x", "[bold red]y", "back\\slash", "z[link=http://x]q[/link]"])
def test_report_prints_paths_with_markup_characters_as_they_are(run_cli, tmp_path, name):
    pytest.importorskip("matplotlib")
    folder = tmp_path / name
    runs = folder / "runs.jsonl"
    results.append(runs, ok_record())
    output = folder / f"{name}.md"
    plot = folder / f"{name}-plot"
    result = run_cli("report", runs, "-o", output, "--format", "markdown", "--plot", plot)
    assert result.code == 0, result
    assert f"report: {output}\n" in result.out
    assert f"plot: {plot}.png\n" in result.out
    assert output.read_text().startswith("### dataset: tinyset")
    assert (folder / f"{name}-plot.png").read_bytes().startswith(PNG)
    table = run_cli("report", runs)
    assert table.code == 0 and "tiny" in table.out, table


def test_plot_into_a_folder_or_a_name_without_suffix_writes_the_file_it_prints(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs.jsonl"
    results.append(runs, ok_record())
    folder = tmp_path / "plots"
    folder.mkdir()
    result = run_cli("report", runs, "--plot", folder)
    assert result.code == 0, result
    assert f"plot: {folder / 'tradeoff.png'}" in result.out
    assert (folder / "tradeoff.png").read_bytes().startswith(PNG)
    result = run_cli("report", runs, "--plot", f"{tmp_path / 'new'}/", "--format", "csv")
    assert f"plot: {tmp_path / 'new' / 'tradeoff.png'}" in result.err
    result = run_cli("report", runs, "--plot", tmp_path / "noext")
    assert f"plot: {tmp_path / 'noext.png'}" in result.out
    assert (tmp_path / "noext.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "noext").exists()
    result = run_cli("report", runs, "--plot", tmp_path / "fig.svg")
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")


def test_plot_or_output_under_a_file_or_read_only_fails_before_any_output(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs.jsonl"
    results.append(runs, ok_record())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    report_file = tmp_path / "report.md"
    result = run_cli("report", runs, "--plot", blocker / "plot.png", "-o", report_file)
    assert_clean_error(result, "--plot", str(blocker))
    assert not report_file.exists()  # nothing written before the error
    assert_clean_error(
        run_cli("report", runs, "--plot", tmp_path / "p.txt"), "cannot write a .txt image"
    )
    assert_clean_error(run_cli("report", runs, "-o", blocker / "r.md"), "--output")
    if os.path.isdir("/proc/self"):
        assert_clean_error(run_cli("report", runs, "--plot", "/proc/tradeoff.png"), "/proc")


# --------------------------------------------------------------------------- item 12: predict --grid


def test_predict_grid_under_a_file_fails_before_loading_anything(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run_cli("predict", tmp_path / "missing.pt", tmp_path, "--grid", blocker / "g.png")
    assert_clean_error(result, "--grid", str(blocker))
    assert "missing.pt" not in result.err  # the grid was checked first


def test_save_grid_writes_the_file_it_returns(tmp_path):
    pytest.importorskip("matplotlib")
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    inputs = [predict.ImageInput("a/[red]x.png", "cat"), predict.ImageInput("b.png")]
    for given, written in [
        (tmp_path / "grid", tmp_path / "grid.png"),
        (f"{tmp_path / 'sub'}/", tmp_path / "sub" / "predictions.png"),
    ]:
        path = predict.save_grid(given, images, inputs, [("cat", 0.9), None])
        assert path == written and written.read_bytes().startswith(PNG)


def test_predict_prints_image_and_class_names_with_brackets_as_they_are(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    data = make_tree(tmp_path / "ds", train=4, val=2)
    out = tmp_path / "runs.jsonl"
    result = run_cli("run", "--datasets", f"imagefolder:{data}", "--backbones", "tiny",
                     "--strategies", "linear", "--epochs", "1", "--image-size", "16",
                     "--out", out, "--cache-dir", tmp_path / "cache", "--device", "cpu",
                     "--quiet", "--save-models")  # fmt: skip
    assert result.code == 0, result
    (record,) = results.read(out)
    odd = tmp_path / "[bold]cat[/]" / "[red]x\\.png"
    odd.parent.mkdir(parents=True)  # "[/]" holds a separator: two folders
    odd.write_bytes((data / "val" / "cat" / "000.png").read_bytes())
    grid = tmp_path / "[/]grid"
    result = run_cli("predict", record["cost"]["checkpoint"], odd, "--grid", grid, "-k", "1")
    assert result.code == 0, result
    assert str(odd) in result.out
    assert f"grid: {grid}.png" in result.out
    assert (tmp_path / "[/]grid.png").read_bytes().startswith(PNG)


# --------------------------------------------------------------------------- item 14


def test_a_comma_inside_a_dataset_path_can_be_escaped(tmp_path):
    folder = tmp_path / "a,b"
    folder.mkdir()
    parser = cli.build_parser()
    args = parser.parse_args(["run", "--datasets", f"imagefolder:{tmp_path}/a\\,b,synthetic"])
    assert args.datasets == [f"imagefolder:{folder}", "synthetic"]


def test_an_unescaped_comma_in_an_existing_dataset_path_says_how_to_write_it(tmp_path, capsys):
    folder = tmp_path / "a,b"
    folder.mkdir()
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--datasets", f"imagefolder:{folder}"])
    assert stop.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "one path with a comma in it" in err
    assert f"imagefolder:{tmp_path}/a\\,b" in err and "--config" in err


def test_a_dataset_path_with_a_comma_in_a_config_file_list_is_one_dataset(tmp_path):
    from tlbench.config import make_config

    config = tmp_path / "grid.toml"
    config.write_text('datasets = ["imagefolder:/data/a,b"]\n')
    assert make_config(config).datasets == ["imagefolder:/data/a,b"]


def test_grid_titles_with_dollar_signs_are_drawn_not_typeset(tmp_path):
    pytest.importorskip("matplotlib")
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    inputs = [predict.ImageInput("a/$\\frac$.png", "$\\x$")]
    path = predict.save_grid(tmp_path / "g.png", images, inputs, [("$\\frac$", 0.5)])
    assert path.read_bytes().startswith(PNG)


def test_predict_refuses_a_pipe_named_like_an_image(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(TlbenchError, match="not a regular file"):
        predict.collect_images([str(fifo)], ["cat"])


def test_report_output_and_plot_naming_one_file_is_refused(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs.jsonl"
    results.append(runs, ok_record())
    result = run_cli("report", runs, "-o", tmp_path / "x.png", "--plot", tmp_path / "x.png")
    assert_clean_error(result, "name the same file")
