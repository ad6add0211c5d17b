"""Plugin loading, isolation and the registries: what a user of third-party plugins relies on.

Inline plugins are classes registered through the `tlbench_plugins` fixture
(from `tlbench.testing`, the pytest plugin). Real entry points are fake
installed distributions written to a temporary site directory on `sys.path`,
so the CLI finds them exactly as it finds `pip install`ed ones.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import warnings

import pytest

import tlbench
from tlbench import Backbone, Family, Strategy, hookimpl, testing
from tlbench.cli import main
from tlbench.errors import DuplicateNameError, TlbenchError, UnknownNameError
from tlbench.results import read

# --------------------------------------------------------------------------- inline plugins


class Tiny:
    """A backbone, a dataset and a strategy family, all tiny."""

    @hookimpl
    def tlbench_register_backbones(self, register):
        register(testing.tiny_backbone("tiny_cnn"))

    @hookimpl
    def tlbench_register_datasets(self, register):
        register(testing.tiny_dataset("squares"))


def _letter_backbone(letter: str) -> Backbone:
    if len(letter) != 1 or letter not in "abc":
        raise LookupError(letter)
    # Named anything: the core renames it to the name the user asked for.
    return testing.tiny_backbone(f"internal-{letter}")


class Letters:
    """Backbone family `letters:<a|b|c>`; counts resolve() and members() calls."""

    def __init__(self):
        self.resolved: list[str] = []
        self.listed = 0

    def resolve(self, argument):
        self.resolved.append(argument)
        return _letter_backbone(argument)

    def members(self):
        self.listed += 1
        return ["a", "b", "c"]

    @hookimpl
    def tlbench_register_backbones(self, register):
        register(
            Family(
                "letters",
                resolve=self.resolve,
                members=self.members,
                featured=("a",),
                description="test family",
                argument_help="<letter>",
            )
        )


def _slow_scratch(argument: str) -> Strategy:
    return Strategy(
        name=f"slow:{argument}",
        description=f"every parameter trains at {argument}x the usual learning rate",
        defaults=tlbench.Hyperparameters(lr=2e-3 * float(argument)),
        pretrained=False,
    )


class Slow:
    """Strategy family `slow:<factor>`: families work for strategies too."""

    @hookimpl
    def tlbench_register_strategies(self, register):
        register(Family("slow", resolve=_slow_scratch, featured=("0.5",), argument_help="<factor>"))


def _warnings(record, text: str) -> list[str]:
    return [str(w.message) for w in record if text in str(w.message)]


# --------------------------------------------------------------------------- registries


def test_single_names_resolve_and_unknown_names_suggest(tlbench_plugins):
    plugins = tlbench_plugins(("tiny", Tiny()), builtins=True)
    assert plugins.backbones.get("tiny_cnn").feature_dim == 16
    assert plugins.provider("backbone", "tiny_cnn") == "tiny"
    assert plugins.provider("backbone", "resnet18") == "torchvision_backbones"
    with pytest.raises(
        UnknownNameError, match=r"'tiny_cn'.*Did you mean 'tiny_cnn'.*tlbench list backbones"
    ):
        plugins.backbones.get("tiny_cn")
    with pytest.raises(TlbenchError, match="takes no argument"):
        plugins.backbones.get("tiny_cnn:x")
    assert "tiny_cnn" in plugins.backbones and "tiny_cn" not in plugins.backbones


def test_the_public_builtin_strategies_are_the_registered_ones(tlbench_plugins):
    plugins = tlbench_plugins(builtins=True)
    for public in (tlbench.SCRATCH, tlbench.LINEAR, tlbench.FINETUNE):
        assert plugins.strategies.get(public.name) is public


def test_family_members_resolve_once_under_the_asked_name(tlbench_plugins):
    letters = Letters()
    plugins = tlbench_plugins(("letters", letters))
    backbone = plugins.backbones.get("letters:b")
    assert backbone.name == "letters:b"
    assert plugins.backbones.get("letters:b") is backbone
    assert letters.resolved == ["b"]
    assert plugins.provider("backbone", "letters:b") == "letters"
    assert "letters:c" in plugins.backbones
    assert "letters:z" not in plugins.backbones
    assert "letters" not in plugins.backbones
    assert plugins.info["letters"].provides == {"backbones": ["letters:<letter>"]}


def test_family_errors_say_what_to_write(tlbench_plugins):
    plugins = tlbench_plugins(("letters", Letters()))
    with pytest.raises(TlbenchError, match=r"needs an argument: letters:<letter>.*'letters:\*'"):
        plugins.backbones.get("letters")
    with pytest.raises(UnknownNameError, match=r"'letters:bb'.*Did you mean 'letters:b'"):
        plugins.backbones.get("letters:bb")


def test_family_listing_shows_featured_and_searches_members_only_when_asked(tlbench_plugins):
    letters = Letters()
    plugins = tlbench_plugins(("letters", letters), ("tiny", Tiny()))
    assert plugins.backbones.names() == ["letters:a", "tiny_cnn"]
    assert plugins.backbones.names("tiny*") == ["tiny_cnn"]
    assert letters.listed == 0, "a pattern that cannot match letters:... must not list its members"
    assert plugins.backbones.names("letters:*") == ["letters:a", "letters:b", "letters:c"]
    assert plugins.backbones.names("*b*") == ["letters:b"]
    assert list(plugins.backbones.families) == ["letters"]
    assert [b.name for b in plugins.backbones] == ["tiny_cnn"] and len(plugins.backbones) == 1


def test_a_family_that_fails_is_reported_as_the_plugins_failure(tlbench_plugins):
    class Bad:
        @hookimpl
        def tlbench_register_backbones(self, register):
            register(Family("bad", resolve=lambda a: 1 / 0, members=lambda: 1 / 0))
            register(
                Family(
                    "odd", resolve=lambda a: Strategy("x", "x", tlbench.Hyperparameters(), False)
                )
            )

    plugins = tlbench_plugins(("badplugin", Bad()))
    with pytest.raises(
        TlbenchError, match="'bad:x': plugin 'badplugin' failed to resolve it: ZeroDivisionError"
    ):
        plugins.backbones.get("bad:x")
    with pytest.raises(TlbenchError, match="resolved 'odd:x' to a Strategy, not a Backbone"):
        plugins.backbones.get("odd:x")
    with pytest.warns(RuntimeWarning, match="could not list its backbone family 'bad'"):
        assert plugins.backbones.names("bad:*") == []


def test_family_backbones_and_strategies_run_through_the_runner(tlbench_plugins, tlbench_run):
    plugins = tlbench_plugins(
        ("letters", Letters()), ("slow", Slow()), ("tiny", Tiny()), builtins=True
    )
    records = tlbench_run(
        plugins, backbones=["letters:a"], datasets=["squares"], strategies=["linear", "slow:0.5"]
    )
    assert [(r["status"], r["config"]["backbone"], r["config"]["strategy"]) for r in records] == [
        ("ok", "letters:a", "linear"),
        ("ok", "letters:a", "slow:0.5"),
    ]
    assert records[0]["config"]["weights"] == "tiny-fixed-init"
    assert records[1]["config"]["hyperparameters"]["lr"] == pytest.approx(1e-3)
    assert records[1]["providers"] == {"backbone": "letters", "strategy": "slow", "dataset": "tiny"}


# --------------------------------------------------------------------------- isolation


def test_a_plugin_raising_while_registering_adds_nothing_and_is_reported_once(tlbench_plugins):
    class HalfWay:
        @hookimpl
        def tlbench_register_backbones(self, register):
            register(testing.tiny_backbone("half_registered"))
            raise RuntimeError("cannot reach the model zoo")

    with pytest.warns(RuntimeWarning) as record:
        plugins = tlbench_plugins(("halfway", HalfWay()), ("tiny", Tiny()))
    reports = _warnings(record, "halfway")
    assert reports == [
        "tlbench plugin 'halfway' failed and was skipped: RuntimeError: cannot reach the model zoo"
    ]
    assert "half_registered" not in plugins.backbones
    assert plugins.backbones.names() == ["tiny_cnn"]
    info = plugins.info["halfway"]
    assert (info.status, info.provides) == ("failed", {})
    assert [i.name for i in plugins.failures] == ["halfway"]


@pytest.mark.parametrize(
    ("plugin", "error"),
    [
        (
            type(
                "WrongType",
                (),
                {"tlbench_register_datasets": hookimpl(lambda self, register: register("squares"))},
            ),
            "register() for datasets expects a tlbench.Dataset, got str",
        ),
        (
            type(
                "Twice",
                (),
                {
                    "tlbench_register_datasets": hookimpl(
                        lambda self, register: [
                            register(testing.tiny_dataset("d")) for _ in range(2)
                        ]
                    )
                },
            ),
            "it registers the dataset 'd' twice",
        ),
        (
            type(
                "BadName",
                (),
                {
                    "tlbench_register_datasets": hookimpl(
                        lambda self, register: register(testing.tiny_dataset("a:b"))
                    )
                },
            ),
            "must be a non-empty string without ':'",
        ),
        (
            type(
                "FamilyDataset",
                (),
                {
                    "tlbench_register_datasets": hookimpl(
                        lambda self, register: register(Family("f", resolve=str))
                    )
                },
            ),
            "a dataset cannot be a Family",
        ),
        (
            type(
                "Misspelled",
                (),
                {"tlbench_register_backbone": hookimpl(lambda self, register: None)},
            ),
            "unknown hook 'tlbench_register_backbone'",
        ),
        (
            type(
                "WrongArgs",
                (),
                {"tlbench_register_backbones": hookimpl(lambda self, regster: None)},
            ),
            "regster",
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_a_faulty_plugin_fails_alone(tlbench_plugins, plugin, error):
    with pytest.warns(RuntimeWarning, match="'faulty' failed and was skipped"):
        plugins = tlbench_plugins(("faulty", plugin()), ("tiny", Tiny()))
    assert plugins.info["faulty"].status == "failed"
    assert error in plugins.info["faulty"].error
    assert plugins.datasets.names() == ["squares"] and plugins.backbones.names() == ["tiny_cnn"]


def test_two_plugins_with_one_name_make_it_an_error_naming_both(tlbench_plugins):
    plugins = tlbench_plugins(("tiny", Tiny()), ("copycat", Tiny()), ("letters", Letters()))
    for get in (lambda: plugins.backbones.get("tiny_cnn"), lambda: plugins.datasets.get("squares")):
        with pytest.raises(
            DuplicateNameError,
            match=r"registered by both 'tiny' and 'copycat'.*TLBENCH_BLOCK_PLUGINS",
        ):
            get()
    assert plugins.backbones.conflicts == {"tiny_cnn": ["tiny", "copycat"]}
    assert "tiny_cnn" not in plugins.backbones.names()
    assert plugins.backbones.get("letters:a").name == "letters:a", "other names still work"


def test_an_observer_that_raises_is_reported_once_and_the_run_goes_on(tlbench_plugins, tlbench_run):
    calls: list[tuple] = []

    class Recorder:
        @hookimpl
        def tlbench_run_started(self, run):
            calls.append(("started", run.backbone, run.strategy))

        @hookimpl
        def tlbench_epoch_ended(self, run, epoch, metrics):
            calls.append(("epoch", epoch, {"eval_accuracy", "train_loss"} <= set(metrics)))

        @hookimpl
        def tlbench_run_finished(self, run, record):
            calls.append(("finished", record["status"], record["key"] == run.key))

        @hookimpl
        def tlbench_grid_finished(self, records):
            calls.append(("grid", [r["status"] for r in records]))

    class Crashes:
        @hookimpl
        def tlbench_epoch_ended(self, epoch):  # an implementation may take fewer arguments
            raise ValueError(f"dashboard offline at epoch {epoch}")

    plugins = tlbench_plugins(
        ("crashes", Crashes()), ("recorder", Recorder()), ("tiny", Tiny()), builtins=True
    )
    with pytest.warns(RuntimeWarning) as record:
        records = tlbench_run(
            plugins, backbones=["tiny_cnn"], datasets=["squares"], strategies=["scratch"], epochs=2
        )
    assert [r["status"] for r in records] == ["ok"]
    assert _warnings(record, "crashes") == [
        "tlbench plugin 'crashes' raised in tlbench_epoch_ended: ValueError: dashboard offline at epoch 1"
    ]
    assert calls == [
        ("started", "tiny_cnn", "scratch"),
        ("epoch", 1, True),
        ("epoch", 2, True),
        ("finished", "ok", True),
        ("grid", ["ok"]),
    ]


# --------------------------------------------------------------------------- real entry points


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Install fake distributions into a temporary site directory on sys.path.

    `site(dist, version, module, source)` writes `module.py` and a dist-info
    whose `tlbench` entry point is the module: importlib.metadata, and so
    tlbench, sees an installed distribution.
    """
    root = tmp_path / "site"
    root.mkdir()
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at the terminal width; keep lines whole
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def install(
        dist: str, version: str, module: str, source: str, entry: str | None = None
    ) -> None:
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[tlbench]\n{entry or module} = {module}\n")
        modules.append(module)
        importlib.invalidate_caches()

    yield install
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


GOOD = """
    from tlbench import Family, hookimpl, testing

    @hookimpl
    def tlbench_register_backbones(register):
        register(testing.tiny_backbone("goodnet"))
        register(Family("goodfam", resolve=lambda a: testing.tiny_backbone(a), members=lambda: ["x", "y"],
                        featured=("x",), argument_help="<x|y>"))

    @hookimpl
    def tlbench_register_datasets(register):
        register(testing.tiny_dataset("goodset"))
"""
BROKEN = """
    raise ImportError("simulated: needs a package that is not installed")
"""
BADREG = """
    from tlbench import hookimpl

    @hookimpl
    def tlbench_register_strategies(register):
        raise RuntimeError("registration exploded")
"""
EXITS = """
    import sys
    sys.exit(3)
"""
CLASH = """
    from tlbench import hookimpl, testing

    @hookimpl
    def tlbench_register_backbones(register):
        register(testing.tiny_backbone("small_cnn"))
"""


@pytest.fixture
def installed(site):
    """A good plugin beside three broken ones, as installed distributions."""
    site("tlbench-good", "2.0", "tlbench_good_plugin", GOOD, entry="good")
    site("tlbench-broken", "1.0", "tlbench_broken_plugin", BROKEN, entry="broken")
    site("tlbench-badreg", "0.3", "tlbench_badreg_plugin", BADREG, entry="badreg")
    site("tlbench-exits", "0.1", "tlbench_exits_plugin", EXITS, entry="exits")
    return site


def _only_fakes(monkeypatch, *extra: str) -> None:
    # Tests never load whatever else happens to be installed (tlbench-timm...).
    monkeypatch.setenv(
        "TLBENCH_LOAD_PLUGINS", ",".join(["good", "broken", "badreg", "exits", *extra])
    )


def _reports(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"plugin '{name}' failed" in line]


def test_broken_installed_plugins_do_not_stop_list(installed, monkeypatch, capsys):
    _only_fakes(monkeypatch)
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "goodnet" in out and "goodset" in out and "goodfam:<x|y>" in out and "goodfam:x" in out
    assert "resnet18" in out, "builtins are listed too"
    assert _reports(err, "broken") == [
        "warning: tlbench plugin 'broken' failed and was skipped: ImportError: simulated: needs a "
        "package that is not installed"
    ]
    assert len(_reports(err, "badreg")) == 1 and "RuntimeError: registration exploded" in err
    assert len(_reports(err, "exits")) == 1 and "SystemExit: 3" in err


def test_broken_installed_plugins_do_not_stop_run(installed, monkeypatch, capsys, tmp_path):
    _only_fakes(monkeypatch)
    out = tmp_path / "runs.jsonl"
    argv = [
        "run",
        "--backbones",
        "goodnet,goodfam:y",
        "--datasets",
        "goodset",
        "--strategies",
        "scratch",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert len(_reports(err, "broken")) == 1
    records = read(out)
    assert [(r["status"], r["config"]["backbone"]) for r in records] == [
        ("ok", "goodnet"),
        ("ok", "goodfam:y"),
    ]
    assert records[0]["environment"]["plugins"] == {"good": "2.0"}
    assert records[1]["providers"]["backbone"] == "good"


def test_plugins_command_shows_what_loaded_and_what_failed(installed, monkeypatch, capsys):
    _only_fakes(monkeypatch)
    assert main(["plugins", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    good = infos["good"]
    assert (good["status"], good["version"], good["distribution"]) == (
        "loaded",
        "2.0",
        "tlbench-good",
    )
    assert good["provides"] == {"backbones": ["goodnet", "goodfam:<x|y>"], "datasets": ["goodset"]}
    assert infos["broken"]["status"] == "failed"
    assert (
        infos["broken"]["error"] == "ImportError: simulated: needs a package that is not installed"
    )
    assert infos["badreg"]["error"] == "RuntimeError: registration exploded"
    assert infos["synthetic"]["builtin"] and infos["synthetic"]["status"] == "loaded"

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "tlbench-good" in out and "goodfam:<x|y>" in out and "registration exploded" in out


def test_a_name_clash_with_a_builtin_is_an_error_naming_both(site, monkeypatch, capsys, tmp_path):
    site("tlbench-clash", "0.1", "tlbench_clash_plugin", CLASH, entry="clash")
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "conflict" in out and "'small_cnn'" in out and "'clash'" in out
    argv = [
        "run",
        "--backbones",
        "small_cnn",
        "--datasets",
        "synthetic",
        "--strategies",
        "scratch",
        "--out",
        str(tmp_path / "r.jsonl"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "backbone 'small_cnn' is registered by both 'small_cnn' and 'clash'" in err.replace(
        "\n", " "
    )
    assert main(["plugins", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["clash"]["conflicts"] == ["backbone small_cnn"]


def test_load_plugins_allow_list_by_entry_point_or_distribution_name(installed, monkeypatch):
    for allowed in ("good", "tlbench-good", "tlbench_good"):
        monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", allowed)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # nothing broken is even imported
            plugins = tlbench.Plugins(builtins=False)
        assert plugins.backbones.names("good*") == ["goodfam:x", "goodfam:y", "goodnet"]
        assert plugins.info["broken"].status == "not allowed"
        assert not plugins.failures
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "god")
    with pytest.warns(
        RuntimeWarning, match="names 'god', but no installed tlbench plugin is called that"
    ):
        assert "goodnet" not in tlbench.Plugins(builtins=False).backbones
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "")
    plugins = tlbench.Plugins()
    assert "goodnet" not in plugins.backbones and "small_cnn" in plugins.backbones


def test_block_plugins_blocks_entry_points_and_builtins(installed, monkeypatch):
    _only_fakes(monkeypatch)
    monkeypatch.setenv("TLBENCH_BLOCK_PLUGINS", "tlbench-broken, badreg,exits,synthetic")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        plugins = tlbench.Plugins()
    assert {
        n: plugins.info[n].status for n in ("broken", "badreg", "exits", "synthetic", "good")
    } == {
        "broken": "blocked",
        "badreg": "blocked",
        "exits": "blocked",
        "synthetic": "blocked",
        "good": "loaded",
    }
    assert plugins.failures == []
    with pytest.raises(UnknownNameError):
        plugins.datasets.get("synthetic")


def test_trace_plugins_prints_loading_registration_and_hook_calls(installed, monkeypatch, capsys):
    _only_fakes(monkeypatch)
    monkeypatch.setenv("TLBENCH_TRACE_PLUGINS", "1")
    monkeypatch.setenv("TLBENCH_BLOCK_PLUGINS", "exits")
    with pytest.warns(RuntimeWarning):
        plugins = tlbench.Plugins(builtins=False)
    plugins.grid_finished([])
    err = capsys.readouterr().err
    for line in (
        "[tlbench plugins] loaded 'good' from tlbench_good_plugin",
        "[tlbench plugins] calling tlbench_register_backbones of 'good'",
        "[tlbench plugins] 'good' registered backbone 'goodfam:<x|y>'",
        "[tlbench plugins] 'broken' failed: ImportError",
        "[tlbench plugins] blocked 'exits'",
    ):
        assert line in err
    monkeypatch.delenv("TLBENCH_TRACE_PLUGINS")
    with pytest.warns(RuntimeWarning):
        tlbench.Plugins(builtins=False)
    assert "[tlbench plugins]" not in capsys.readouterr().err


def test_two_distributions_with_one_entry_point_name_both_show(site, monkeypatch):
    site("tlbench-one", "1.0", "tlbench_one_plugin", GOOD, entry="same")
    site("tlbench-two", "1.0", "tlbench_two_plugin", CLASH, entry="same")
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "same")
    with pytest.warns(RuntimeWarning, match="already loaded under the name 'same'"):
        plugins = tlbench.Plugins(builtins=False)
    same = [i for i in plugins.info.values() if i.name == "same"]
    # Which one wins depends on sys.path order; both are shown, one failed, naming the name.
    assert sorted(i.status for i in same) == ["failed", "loaded"]
    assert {i.distribution for i in same} == {"tlbench-one", "tlbench-two"}


# --------------------------------------------------------------------------- tlbench.testing as a pytest plugin


# slow: a plugin author's pytest session in its own process (5 s).
@pytest.mark.slow
def test_tlbench_testing_is_a_pytest_plugin_for_plugin_authors(tmp_path):
    """A plugin author's own test file gets the fixtures without any conftest."""
    test = tmp_path / "test_my_plugin.py"
    test.write_text(
        textwrap.dedent("""
        from tlbench import hookimpl, testing

        class MyPlugin:
            @hookimpl
            def tlbench_register_backbones(self, register):
                register(testing.tiny_backbone("mine"))

        def test_mine(tlbench_plugins, tlbench_tiny_dataset, tlbench_request):
            plugins = tlbench_plugins(MyPlugin())
            testing.check_backbone(plugins.backbones.get("mine"), image_size=16)
            testing.check_dataset(tlbench_tiny_dataset, tlbench_request)
    """)
    )
    import subprocess

    probe = subprocess.run(
        [sys.executable, "-c", "import sys, tlbench.testing; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False", (
        "pytest loads tlbench.testing in every session: keep it light"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_plugin_info_round_trips_to_json(tlbench_plugins):
    plugins = tlbench_plugins(("tiny", Tiny()))
    info = plugins.info["tiny"].to_dict()
    assert json.loads(json.dumps(info)) == info
    assert info["status"] == "loaded" and info["provides"] == {
        "backbones": ["tiny_cnn"],
        "datasets": ["squares"],
    }


def test_versions_list_loaded_third_party_plugins_only(tlbench_plugins):
    plugins = tlbench_plugins(("tiny", Tiny()), builtins=True)
    assert plugins.versions() == {"tiny": "?"}
