"""The plugin author guide, docs/plugins.md, is checked against the code it describes.

Every hook in `tlbench.hookspecs` is documented with its exact signature and
implemented or called by at least one test (read from the tests' code, not
their text); the guide documents no hook that does not
exist; its complete minimal plugin and its example test file run as written.
"""

from __future__ import annotations

import ast
import functools
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


#: the hooks of the first release; more may be added, none of these may silently go.
FIRST_HOOKS = {
    "tlbench_register_backbones",
    "tlbench_register_datasets",
    "tlbench_register_strategies",
    "tlbench_run_started",
    "tlbench_epoch_ended",
    "tlbench_run_finished",
    "tlbench_grid_finished",
}


def test_there_are_hooks_to_document():
    assert set(hooks()) >= FIRST_HOOKS


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_in_the_guide_with_its_signature(name):
    assert f"`{signature(hooks()[name])}`" in GUIDE.read_text(), (
        f"docs/plugins.md has no heading with `{signature(hooks()[name])}`"
    )


def _is_hookimpl(node: ast.expr) -> bool:
    """`hookimpl`, `tlbench.hookimpl`, `hookimpl(tryfirst=True)`..."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name == "hookimpl"


def exercised_hooks(source: str) -> set[str]:
    """Hooks a test module implements or calls, read from its syntax tree (not its text:
    a name in a comment, a string or an unrelated identifier does not count).

    Implemented: a function of the hook's name decorated with `hookimpl`, or a
    `{"<hook>": hookimpl(...)}` entry of a class built on the fly. Called:
    `<anything>.hook.<hook>(...)`, as a test of the hook's caller does.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_is_hookimpl(d) for d in node.decorator_list):
                found.add(node.name)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and isinstance(key.value, str)
                    and isinstance(value, ast.Call)
                    and _is_hookimpl(value.func)
                ):
                    found.add(key.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "hook":
                found.add(node.func.attr)
    return found


def test_exercised_hooks_reads_code_not_text():
    source = """
# tlbench_run_started is only mentioned here
NAME = "tlbench_epoch_ended"
def tlbench_grid_finished(records): ...
class P:
    @tlbench.hookimpl
    def tlbench_run_finished(self, run, record): ...
    @hookimpl(tryfirst=True)
    def tlbench_register_backbones(self, register): ...
make = type("P", (), {"tlbench_register_datasets": hookimpl(lambda self, register: None)})
pm.hook.tlbench_register_strategies(register=print)
"""
    assert exercised_hooks(source) == {
        "tlbench_run_finished",
        "tlbench_register_backbones",
        "tlbench_register_datasets",
        "tlbench_register_strategies",
    }


@functools.cache
def _exercised_by_file() -> dict[str, set[str]]:
    """The hooks each of the test suite's modules (and the helpers and conftest they share)
    implements or calls, but this one's; parsed once for every hook's test."""
    here = Path(__file__)
    sources = {p.name: p.read_text() for p in sorted(here.parent.glob("*.py")) if p != here}
    return {name: exercised_hooks(source) for name, source in sources.items()}


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_implemented_or_called_by_a_test(name):
    where = [file for file, found in _exercised_by_file().items() if name in found]
    assert where, (
        f"no module under tests/ implements {name} (a @hookimpl function of that name) or "
        "calls it (pm.hook.<name>(...)): the hook is untested"
    )


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
