"""The command line behaves like the tools its users know (issue 16, "CLI conventions").

One test per convention, and one per line the issue found by hand:

    tlbench --version                 -> unrecognized arguments
    tlbench show partial:2            -> no ... is called 'partial:2'. Did you mean 'partial:2'
    tlbench run --strategies lineer   -> Run `tlbench list strategys` (no such command)
    tlbench run --device cuda:1       -> invalid choice
    tlbench list | cat                -> names cut at 80 columns
    errors in a log                   -> hard-wrapped at 80 columns
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.metadata
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tlbench
from tlbench import cli
from tlbench.errors import TlbenchError, UnknownNameError, plural

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((REPO / "tlbench").rglob("*.py")),
    *sorted((REPO / "plugins").glob("*/src/*/*.py")),
]


def _shipped_plugins() -> list[tuple[str, object]]:
    """The plugins this repository ships, loaded explicitly when they are installed."""
    found = []
    for name, module in (("timm", "tlbench_timm"), ("example", "tlbench_example")):
        with contextlib.suppress(ImportError):
            found.append((name, __import__(module)))
    return found


@pytest.fixture
def tl(monkeypatch, capsys):
    """`tl(*args)` -> (exit code, stdout, stderr) of `tlbench.cli.main`, as piped output
    at 80 columns, with the builtins and the plugins shipped here (never others)."""
    shipped = _shipped_plugins()

    class ShippedPlugins(tlbench.plugins.Plugins):  # a subclass: isinstance checks still hold
        def __init__(self, **kwargs):
            super().__init__(entry_points=False, extra=shipped)

    monkeypatch.setattr("tlbench.plugins.Plugins", ShippedPlugins)
    monkeypatch.setenv("COLUMNS", "80")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as stop:  # argparse: --help, --version, usage errors
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _listed(tl) -> list[str]:
    code, out, _ = tl("list", "--json")
    assert code == 0
    return [row["name"] for row in json.loads(out)]


# --------------------------------------------------------------------------- found by hand


def test_version_flag_and_python_m(tl):
    code, out, _ = tl("--version")
    assert code == 0 and out.strip() == f"tlbench {tlbench.__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "tlbench", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0 and done.stdout.strip() == f"tlbench {tlbench.__version__}"


def test_show_partial_2_works(tl):
    if not any(name == "example" for name, _ in _shipped_plugins()):
        pytest.skip("tlbench-example is not installed")
    code, out, err = tl("show", "partial:2")
    assert code == 0, err
    assert "partial:2" in out and "last 2 stage(s)" in out


def test_unknown_strategy_hint_is_a_command_that_exists(tl, tmp_path):
    code, out, err = tl("run", "--strategies", "lineer", "--out", tmp_path / "r.jsonl")
    assert code == 2
    hint = re.search(r"`(tlbench [^`]+)`", err)
    assert hint and hint.group(1) == "tlbench list strategies", err
    code, out, _ = tl(*shlex.split(hint.group(1))[1:])
    assert code == 0 and "linear" in out


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "cuda:12", "mps", "auto"])
def test_device_accepts_indexed_cuda_and_mps(device):
    parser = cli.build_parser()
    assert parser.parse_args(["run", "--device", device]).device == device
    args = parser.parse_args(["predict", "model.pt", "x.png", "--device", device])
    assert args.device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cpu:0"])
def test_device_rejects_what_is_not_a_device(device, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["predict", "model.pt", "x.png", "--device", device])
    assert "not a device" in capsys.readouterr().err


def test_piped_list_never_cuts_a_name(tl):
    names = _listed(tl)
    code, out, _ = tl("list")
    assert code == 0
    first_cells = {line.split("│")[1].strip() for line in out.splitlines() if line.count("│") > 2}
    # Every name is whole in the first cell of its row: nothing cut, nothing folded.
    assert set(names) <= first_cells, set(names) - first_cells
    assert "…" not in out
    assert "torchvision_backbones" in out  # the plugin column too


def test_errors_are_never_hard_wrapped(tmp_path):
    """stderr to a file (a log) at 80 columns: each message stays on one line."""
    name = "a_backbone_name_long_enough_to_push_the_message_past_eighty_columns"
    done = subprocess.run(
        [sys.executable, "-m", "tlbench", "show", name],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80", "TLBENCH_LOAD_PLUGINS": ""},
        cwd=REPO,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80, done.stderr
    assert lines[0].startswith("error: nothing is called") and lines[0].endswith("available.")


def test_messages_are_printed_as_written(tl, monkeypatch):
    """A path ending in a backslash or holding [brackets] is printed as is, never as markup."""

    def fails(args, console):
        warnings.warn("skipping [strategy.finetune] in D:\\runs\\", stacklevel=1)
        raise TlbenchError("cannot read C:\\results\\ [bold]")

    monkeypatch.setitem(cli.COMMANDS, "report", fails)
    code, _, err = tl("report", "x.jsonl")
    assert code == 2
    # Not tlbench's own code: the warning keeps Python's format (tests/test_outputs.py).
    warning, source, error = err.splitlines()
    assert warning.endswith(": UserWarning: skipping [strategy.finetune] in D:\\runs\\")
    assert source.strip().startswith("warnings.warn(")
    assert error == "error: cannot read C:\\results\\ [bold]"


# --------------------------------------------------------------------------- conventions


def test_every_option_says_its_default():
    missing = []
    for parser in cli._subparsers(cli.build_parser()):
        for action in parser._actions:
            if not action.option_strings or isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)
            ):
                continue
            if action.help == argparse.SUPPRESS:  # an old name, parsed but never shown
                continue
            if "default" not in (action.help or ""):
                missing.append(f"{parser.prog} {action.option_strings[0]}")
            elif action.default not in (None, False, argparse.SUPPRESS):
                # ...and where the parser has the default, the help says that one.
                assert str(action.default) in action.help, (parser.prog, action.help)
    assert missing == []


def test_help_renders_for_every_command(tl):
    from tlbench import commands

    assert {"run", "select", "list", "show", "report", "predict", "cache"} <= set(commands.NAMES)
    for command in ("", *commands.NAMES):
        code, out, _ = tl(*([command] if command else []), "--help")
        assert code == 0 and "usage: tlbench" in out


def test_every_command_is_a_module_that_declares_and_runs_it():
    """tox's layout: `tlbench/commands/<name>.py` with `add_parser(subparsers)` and
    `main(args, console) -> int`; the entry point dispatches to nothing else."""
    from tlbench import commands

    parser = cli.build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(commands.NAMES)
    for name in commands.NAMES:
        module = commands.module(name)
        assert module.__name__ == f"tlbench.commands.{name}"
        assert cli.COMMANDS[name] is module.main
        assert list(inspect.signature(module.main).parameters)[:2] == ["args", "console"]


def test_show_works_for_every_name_list_prints(tl, tmp_path):
    from imagetree import make_tree

    names = _listed(tl)
    # Parametrised names are there: a family's featured members and its placeholder.
    assert {"partial:2", "partial:<N>", "imagefolder:<path>"} <= set(names) or not any(
        n == "example" for n, _ in _shipped_plugins()
    )
    failed = {}
    for name in names:
        code, out, err = tl("show", name)
        if code != 0 or name.split(":")[0] not in out:
            failed[name] = err or out
    assert failed == {}
    from imagetree import CLASS_COLOURS

    folder = make_tree(tmp_path / "pets", train=3, val=1)
    code, out, err = tl("show", f"imagefolder:{folder}")
    assert code == 0, err
    n = len(CLASS_COLOURS)
    assert f"{3 * n} train, {n} val" in out
    assert f"{n}: {', '.join(sorted(CLASS_COLOURS))}" in out


def test_show_of_a_timm_member_when_timm_is_installed(tl):
    if not any(name == "timm" for name, _ in _shipped_plugins()):
        pytest.skip("tlbench-timm is not installed")
    code, out, _ = tl("show", "timm:resnet18", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["name"] == "timm:resnet18" and info["feature_dim"] == 512
    # timm declares no parameter count: computed at run time, never by building it here.
    assert info["num_params"] is None
    code, out, _ = tl("show", "timm:resnet18")
    assert "computed at run time" in out


def test_json_output_of_list_show_and_plugins(tl):
    code, out, _ = tl("list", "backbones", "--json")
    rows = json.loads(out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["small_cnn"]["pretrained"] is False
    assert by_name["efficientnet_lite0"]["pretrained"] is True
    assert {r["kind"] for r in rows} == {"backbone"}

    code, out, _ = tl("show", "resnet18", "--json")
    info = json.loads(out)
    assert info["feature_dim"] == 512 and info["preprocessing"]["crop"] == 224
    assert info["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert info["num_params"] == 11_689_512 - (512 * 1000 + 1000)  # torchvision's, less the fc

    code, out, _ = tl("show", "imagefolder:<path>", "--json")
    assert json.loads(out)["argument"] == "<path>"

    code, out, _ = tl("plugins", "--json")
    assert code == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    assert "resnet18" in plugins["torchvision_backbones"]["provides"]["backbones"]


def _hints() -> list[tuple[str, int, str]]:
    """(file, line, text) of every backticked `tlbench ...` in a string of the source."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Docstrings describe; messages and help instruct: only the latter are checked.
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            if isinstance(node, ast.JoinedStr):
                # An f-string: its text with each {expression} kept as source, for eval below.
                text = "".join(
                    v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                    for v in node.values
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            for hint in re.findall(r"`(tlbench [^`]*)`", text):
                found.append((str(path.relative_to(REPO)), node.lineno, hint))
    return found


#: values the placeholders of f-string hints take (every value is tried).
PLACEHOLDERS = {
    "kind": ["backbones", "datasets", "strategies", "executors"],
    "registry.kind": ["backbone", "dataset", "strategy", "executor"],
    "self.kind": ["backbone", "dataset", "strategy", "executor"],
    "plural(self.kind)": ["backbones", "datasets", "strategies", "executors"],
    "plural(kind)": ["backbones", "datasets", "strategies", "executors"],
    "fname": ["timm"],
    "base": ["partial"],
    "runner.out": ["results/runs.jsonl"],
}


def _expand(hint: str) -> list[str]:
    fields = re.findall(r"\{([^{}]+)\}", hint)
    out = [hint]
    for field in fields:
        assert field in PLACEHOLDERS, f"add example values for {{{field}}} in {hint!r}"
        out = [h.replace("{" + field + "}", v) for h in out for v in PLACEHOLDERS[field]]
    return out


def test_every_hint_is_a_command_that_parses():
    hints = _hints()
    assert len(hints) > 5  # the scan finds the hints in messages and help
    parser = cli.build_parser()
    wrong = []
    for where, line, hint in hints:
        for command in _expand(hint):
            # `<file>`/`NAME`-style placeholders stand for an argument the user supplies.
            argv = [re.sub(r"^<[^>]+>$", "x", a) for a in shlex.split(command)[1:]]
            try:
                parser.parse_args(argv)
            except SystemExit:
                wrong.append(f"{where}:{line}: {command}")
    assert wrong == []


@pytest.mark.parametrize("kind", ["backbone", "dataset", "strategy"])
def test_unknown_name_hints_run(tl, kind):
    message = str(UnknownNameError(kind, "zzz", []))
    (hint,) = re.findall(r"`(tlbench [^`]+)`", message)
    assert hint == f"tlbench list {plural(kind)}"
    code, out, _ = tl(*shlex.split(hint)[1:])
    assert code == 0 and plural(kind) in out


# --------------------------------------------------------------------------- completion


def _complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell's completion hook gets for `line` (cursor at its end)."""
    pytest.importorskip("argcomplete")
    answer = tmp_path / "completions.txt"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),  # instead of the hook's fd 8
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "TLBENCH_LOAD_PLUGINS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tlbench"], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return [w.strip() for w in answer.read_text().split("\n") if w.strip()]


def test_tab_completes_commands_flags_and_names(tmp_path):
    def _complete_here(line: str) -> list[str]:
        return _complete(line, tmp_path)

    assert "list" in _complete_here("tlbench li")
    assert "--version" in _complete_here("tlbench --vers")
    assert set(_complete_here("tlbench show efficientnet_li")) == {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    }
    # A comma-separated flag completes its last item.
    assert "small_cnn,resnet18" in _complete_here("tlbench run --backbones small_cnn,resnet1")
    assert "flowers12_quick" in _complete_here("tlbench examples copy flowers1")


# --------------------------------------------------------------------------- examples and package


def test_examples_list_show_and_copy(tl, tmp_path):
    shipped = sorted(p.stem for p in (REPO / "tlbench" / "examples").glob("*.toml"))
    code, out, _ = tl("examples", "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)] == shipped
    assert all(e["summary"] for e in json.loads(out))

    code, out, _ = tl("examples", "show", "flowers12_quick")
    original = (REPO / "tlbench" / "examples" / "flowers12_quick.toml").read_text()
    assert code == 0 and out == original

    code, out, _ = tl("examples", "copy", "flowers12_quick", tmp_path)
    copied = tmp_path / "flowers12_quick.toml"
    assert code == 0 and copied.read_text() == original
    assert tomllib.loads(copied.read_text())["backbones"] == ["efficientnet_lite0", "small_cnn"]
    code, _, err = tl("examples", "copy", "flowers12_quick", tmp_path)
    assert code == 2 and "--force" in err
    code, _, _ = tl("examples", "copy", "flowers12_quick", tmp_path / "mine.toml", "--force")
    assert code == 0 and (tmp_path / "mine.toml").read_text() == original
    code, _, err = tl("examples", "copy", "flowers13_quick")
    assert code == 2 and "flowers12_quick" in err


def test_package_metadata_has_one_version_and_a_matching_license():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert importlib.metadata.version("tlbench") == tlbench.__version__
    assert project["project"]["license"] == "Apache-2.0"
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    # setuptools reads SPDX license expressions (PEP 639) from version 77.
    (requirement,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(requirement.split(">=")[1].split(".")[0]) >= 77
    assert any(c.startswith("Programming Language") for c in project["project"]["classifiers"])
    data = project["tool"]["setuptools"]["package-data"]["tlbench"]
    assert "py.typed" in data and "examples/*.toml" in data
    assert (REPO / "tlbench" / "py.typed").exists()
