"""The plugin author guide, docs/plugins.md, is checked against the code it describes.

Every hook in `tlbench.hookspecs` is documented with its exact signature and
exercised by at least one test; the guide documents no hook that does not
exist; its complete minimal plugin and its example test file run as written.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path

import pytest

from tlbench import hookspecs, testing

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "plugins.md"


def hooks() -> dict[str, types.FunctionType]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, "tlbench_spec")
    }


def signature(fn: types.FunctionType) -> str:
    """`name(arg: Type, ...) -> Return`, annotations as written (they are strings here)."""
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{fn.__name__}({params}) -> {sig.return_annotation}"


def code_block(heading: str, index: int = 0) -> str:
    """The `index`-th ```python block of the guide's section `heading`."""
    text = GUIDE.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)
    return blocks[index]


def test_there_are_hooks_to_document():
    assert len(hooks()) == 7


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_in_the_guide_with_its_signature(name):
    assert f"`{signature(hooks()[name])}`" in GUIDE.read_text(), (
        f"docs/plugins.md has no heading with `{signature(hooks()[name])}`"
    )


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_has_a_test(name):
    tests = [p for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name]
    assert any(name in p.read_text() for p in tests), f"no test under tests/ mentions {name}"


def test_the_guide_documents_no_hook_that_does_not_exist():
    documented = set(re.findall(r"^#+ `(tlbench_\w+)\(", GUIDE.read_text(), re.M))
    assert documented == set(hooks())


def test_the_guide_documents_every_loading_variable():
    text = GUIDE.read_text()
    for var in testing.PLUGIN_ENV:
        assert f"`{var}" in text, var


@pytest.fixture
def hello(monkeypatch) -> types.ModuleType:
    """The guide's minimal plugin, as the module `tlbench_hello`."""
    module = types.ModuleType("tlbench_hello")
    exec(compile(code_block("A complete minimal plugin"), str(GUIDE), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "tlbench_hello", module)
    return module


def test_the_minimal_plugin_passes_the_contract_checks(hello, tlbench_plugins, tlbench_run, capsys):
    testing.check_plugin(hello, "hello")
    plugins = tlbench_plugins(("hello", hello), builtins=True)
    testing.check_backbone(plugins.backbones.get("hello_cnn"))
    testing.check_dataset(plugins.datasets.get("stripes"))
    testing.check_strategy(plugins.strategies.get("sgd_scratch"))
    records = tlbench_run(
        plugins,
        backbones=["hello_cnn"],
        datasets=["stripes"],
        strategies=["sgd_scratch"],
        epochs=3,
        image_size=32,
    )
    assert records[0]["status"] == "ok"
    assert records[0]["accuracy"]["best"] > 0.5, "the stripes are learnable"
    assert "hello: hello_cnn ok" in capsys.readouterr().out, "the observer hook ran"


def test_the_guides_example_test_file_passes(hello, tlbench_plugins, tlbench_request, tlbench_run):
    namespace: dict = {}
    exec(compile(code_block("Testing your plugin"), str(GUIDE), "exec"), namespace)
    # The guide's tests hold the assertions; they must all be there to run.
    assert {"test_plugin_loads_cleanly", "test_contracts", "test_a_real_run"} <= namespace.keys()
    namespace["test_plugin_loads_cleanly"]()
    namespace["test_contracts"](tlbench_plugins, tlbench_request)
    namespace["test_a_real_run"](tlbench_plugins, tlbench_run)
