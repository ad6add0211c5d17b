"""A third-party plugin written from docs/plugins.md alone (issue 24): its section "A plugin
with stages and options" is copied into a temporary folder as the files it names, installed
there as a distribution (a `.dist-info` with its entry point, as pip would write it), found
through the `tlbench` entry points, and its own test file, as the guide writes it, passes:
the contract checks and a real run at the `tlbench_run` fixture's default size.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

import tlbench
from tlbench import testing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
SECTION = "A plugin with stages and options"


def blocks(language: str) -> list[str]:
    text = GUIDE.read_text()
    start = text.index(f"\n## {SECTION}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start : end if end > 0 else None], re.S)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The guide's distribution, installed into a site folder on sys.path."""
    (pyproject,) = blocks("toml")
    module_code, _tests = blocks("python")
    project = tomllib.loads(pyproject)["project"]
    (entry, value), *_ = project["entry-points"]["tlbench"].items()
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{value}.py").write_text(module_code)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    (info / "entry_points.txt").write_text(f"[tlbench]\n{entry} = {value}\n")
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield project, entry, value
    sys.modules.pop(value, None)


def test_the_guides_plugin_is_found_as_an_installed_distribution(installed, monkeypatch):
    project, entry, _ = installed
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", entry)
    plugins = tlbench.Plugins()
    info = plugins.info[entry]
    assert (info.status, info.distribution, info.version) == (
        "loaded",
        project["name"],
        project["version"],
    ), info.error
    assert info.provides == {"backbones": ["staged_cnn"], "strategies": ["top_stages"]}
    # Its runs are keyed by its distribution, version and source (docs: "Run keys ...").
    code = plugins.code_identity("strategy", "top_stages")
    assert code is not None
    assert (code["distribution"], code["version"]) == (project["name"], project["version"])
    assert len(code["source"]) == 16


@pytest.mark.slow  # a plugin author's pytest session in its own process
def test_the_guides_test_file_passes_at_the_fixtures_default_size(
    installed, tlbench_plugins, tlbench_run
):
    _, _, module = installed
    importlib.import_module(module)
    _, tests = blocks("python")
    namespace: dict = {}
    exec(compile(tests, str(GUIDE), "exec"), namespace)
    assert {"test_plugin_loads_cleanly", "test_contracts", "test_a_real_run"} <= namespace.keys()
    namespace["test_plugin_loads_cleanly"]()
    namespace["test_contracts"](tlbench_plugins)
    namespace["test_a_real_run"](tlbench_plugins, tlbench_run)


def test_the_guides_error_messages_are_the_ones_users_get(installed):
    _, _, module = installed
    staged = importlib.import_module(module)
    strategy = testing.load_plugins([staged]).strategies.get("top_stages")
    with pytest.raises(tlbench.ConfigError) as wrong_type:
        strategy.check_options({"k": "two"})
    with pytest.raises(tlbench.ConfigError) as unknown:
        strategy.check_options({"depth": 2})
    text = " ".join(GUIDE.read_text().split())
    assert "option 'k' takes a whole number, not str 'two'" in str(wrong_type.value)
    assert "option 'k' takes a whole number, not str 'two'" in text
    expected = (
        "strategy 'top_stages' has no option 'depth'. Its options: k (int, default 1): "
        "stages that train, counted from the head"
    )
    assert expected in str(unknown.value)
    assert expected in text
