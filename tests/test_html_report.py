"""`tlbench report --html`: one standalone page, checked as text and in a real headless browser.

The browser tests drive Debian's chromium through selenium and chromedriver
(`apt-get install chromium chromium-driver`, `pip install 'tlbench[browser]'`);
without them they are skipped, saying so. The fast tests read the page as
text: the hand-worked cells and marks are there, every record's text is
escaped, and nothing refers to anything outside the file.
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import TinyPlugin

import tlbench
from tlbench import report, results, testing
from tlbench.cli import main
from tlbench.config import RunConfig
from tlbench.htmlreport import NO_MATPLOTLIB
from tlbench.runner import Runner

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("x")</script></table><img src=x onerror=alert(1)>'


def record(
    backbone: str,
    strategy: str,
    acc: float | None,
    seconds: float,
    *,
    seed: int,
    dataset: str = "flowers",
    status: str = "ok",
    reason: str | None = None,
    torch_version: str = "2.5.0",
) -> dict:
    """A run record with the fields the report reads (valid per `tlbench.record.problems`)."""
    r = {
        "schema": 2,
        "key": f"{dataset}-{backbone}-{strategy}-{seed}",
        "status": status,
        "reason": reason,
        "time": f"2026-11-30T08:00:0{seed}+00:00",
        "config": {
            "backbone": backbone,
            "weights": None if strategy == "scratch" else "w",
            "dataset": dataset,
            "strategy": strategy,
            "seed": seed,
            "image_size": 64,
            "device": "cpu",
            "precision": "fp32",
            "hyperparameters": {"epochs": 3, "lr": 0.001},
        },
        "environment": {
            "tlbench": "0.1.0",
            "torch": torch_version,
            "python": "3.11.7",
            "platform": "Linux-6.1-x86_64",
            "device": "cpu",
            "device_name": "x86_64",
            "plugins": {"timm": "0.1.0"},
        },
    }
    if status == "ok":
        r["accuracy"] = {
            "final": acc,
            "best": acc,
            "best_epoch": 3,
            "curve": [{"epoch": e, "eval_accuracy": acc * e / 3} for e in (1, 2, 3)],
        }
        r["cost"] = {
            "train_seconds": seconds,
            "feature_seconds": 0.0,
            "train_images_per_s": 100.0,
            "peak_memory_bytes": 300 * 10**6,
            "trainable_params": 1000,
            "total_params": 5_000_000,
        }
    return r


def hand_records() -> list[dict]:
    """Three seeds of three configurations, a failed run, and a dataset with a hostile name."""
    out = []
    for seed, (fine, lin, scr) in enumerate(
        [(0.90, 0.70, 0.50), (0.80, 0.72, 0.41), (0.85, 0.71, 0.44)]
    ):
        out.append(record("big", "finetune", fine, 100.0, seed=seed))
        out.append(record("small", "linear", lin, 1.0, seed=seed, torch_version="2.6.0"))
        out.append(record("big", "scratch", scr, 200.0, seed=seed))
    out.append(record("tiny", "finetune", None, 0, seed=0, status="failed", reason="OOM <b>x</b>"))
    out.append(record("b", "linear", 0.5, 2.0, seed=0, dataset=HOSTILE))
    return out


def hand_records_path(tmp_path: Path) -> Path:
    """`hand_records()` as a results file."""
    path = tmp_path / "hand.jsonl"
    for r in hand_records():
        results.append(path, r)
    return path


# The flowers table by hand. t_{0.975, 2} = 4.3027 (a t table); half = t * sd / sqrt(3).
# finetune: 0.90 0.80 0.85 -> mean 85.0, sd 5.0,  half 12.42 -> [72.6, 97.4]
# linear:   0.70 0.72 0.71 -> mean 71.0, sd 1.0,  half  2.48 -> [68.5, 73.5]
# scratch:  0.50 0.41 0.44 -> mean 45.0, sd 4.58, half 11.38 -> [33.6, 56.4]
# Pareto: finetune (most accurate) and linear (cheapest); scratch is beaten on both.
# Ties with the best (paired t of the seed differences, 95%): linear - finetune: -.20 -.08 -.14,
# mean -.14, sd .06, half .149: the interval holds 0, tied; scratch: -.40 -.39 -.41: not tied.
# vs scratch: big finetune 85.0 - 45.0 = +40.0; small has no scratch row.
FLOWERS = [
    ["big", "finetune", "85.0 ± 5.0 [72.6, 97.4]", "3", "3", "100", "100", "300",
     "1.0k / 5.00M", "+40.0", "*", "=", ""],
    ["small", "linear", "71.0 ± 1.0 [68.5, 73.5]", "3", "3", "1.00", "100", "300",
     "1.0k / 5.00M", "", "*", "=", ""],
    ["big", "scratch", "45.0 ± 4.6 [33.6, 56.4]", "3", "3", "200", "100", "300",
     "1.0k / 5.00M", "", "", "", ""],
    ["tiny", "finetune", "", "", "", "", "", "", "", "", "", "", "failed: OOM <b>x</b>"],
]  # fmt: skip


class Page(HTMLParser):
    """The comparison tables (section -> rows of cell texts), the rows' classes, and every
    src/href/style value, from the page's markup."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.row_classes: dict[str, list[str]] = {}
        self.refs: list[str] = []
        self.tags: list[str] = []
        self._section: str | None = None
        self._in_body = False
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]
        if tag == "table" and "comparison" in (a.get("class") or ""):
            self._section = a["data-section"]
            self.tables[self._section] = []
            self.row_classes[self._section] = []
        elif tag == "tbody" and self._section is not None:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[self._section].append([])
            self.row_classes[self._section].append(a.get("class") or "")
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._section][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def assert_standalone(text: str, page: Page) -> None:
    """Nothing the page would fetch: no script, no external style or font, no http(s) at all."""
    assert not re.search(r"https?:", text, re.I), "the page names a web address"
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    assert all(ref.startswith(("data:", "#")) for ref in page.refs), page.refs
    assert "@import" not in text and "url(" not in text  # no style sheet or font fetched


@pytest.fixture
def hand_results(tmp_path) -> Path:
    return hand_records_path(tmp_path)


def test_the_page_holds_the_hand_worked_table_its_marks_the_environment_and_nothing_external(
    hand_results, tmp_path, capsys
):
    pytest.importorskip("matplotlib")
    page_path = tmp_path / "report.html"
    assert main(["report", str(hand_results), "--html", str(page_path)]) == 0
    assert f"html: {page_path}" in capsys.readouterr().out
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)
    assert_standalone(text, page)
    assert page.tables["flowers"] == FLOWERS
    assert page.row_classes["flowers"] == ["pareto tie", "pareto tie", "", "no-result"]
    # The hostile dataset name and the failure reason are text, not markup.
    assert page.tables[HOSTILE] == [["b", "linear", "50.0", "1", "3", "2.00", "100", "300",
                                     "1.0k / 5.00M", "", "*", "=", ""]]  # fmt: skip
    # (alone in its section, it is its best row: Pareto-optimal and marked as the best, =)
    assert "<script" not in text and "<b>x</b>" not in text and "OOM &lt;b&gt;x&lt;/b&gt;" in text
    # The figure: plot_comparison's SVG, inside the page.
    (src,) = re.findall(r'<img src="(data:image/svg\+xml;base64,[^"]+)"', text)
    svg = base64.b64decode(src.split(",", 1)[1]).decode("utf-8")
    assert "<svg" in svg and "Pareto frontier" in svg
    # The environment: each distinct value, with how many runs had it.
    env = re.search(r'<table class="environment">(.*?)</table>', text, re.S).group(1)
    rows = [re.sub(r"(\s*<[^>]+>\s*)+", "|", row).strip("|") for row in env.split("</tr>")]
    # 11 records: 8 on torch 2.5.0, the 3 linear runs on 2.6.0 (the second row of "torch").
    assert {"torch|2.5.0|8 runs", "2.6.0|3 runs", "plugins|timm 0.1.0|11 runs"} <= set(rows)
    assert "field|value|runs" in rows and "device|x86_64|11 runs" in rows


def test_the_written_paths_are_printed_whole_however_long(hand_results, tmp_path, capsys):
    folder = tmp_path / ("a_folder_name_long_enough_to_pass_eighty_columns_" * 2)
    folder.mkdir()
    page_path, table_path = folder / "report.html", folder / "report.md"
    assert main(["report", str(hand_results), "--html", str(page_path), "-o", str(table_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"report: {table_path}" in lines and f"html: {page_path}" in lines


def test_without_matplotlib_the_page_has_a_note_instead_of_the_figure(
    hand_results, tmp_path, monkeypatch
):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it fails, as uninstalled
    page_path = tmp_path / "report.html"
    assert main(["report", str(hand_results), "--html", str(page_path)]) == 0
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)
    assert_standalone(text, page)
    assert "<img" not in text and NO_MATPLOTLIB.replace("'", "&#x27;") in text
    assert page.tables["flowers"] == FLOWERS


def test_html_output_is_checked_before_any_work(hand_results, tmp_path, capsys):
    before = hand_results.read_bytes()
    for argv, message in [
        (["--html", str(hand_results)], "--html " + str(hand_results) + " is one of the results"),
        (["--html", str(tmp_path)], f"--html {tmp_path} is a folder; name a file, e.g. "
                                    f"{tmp_path / 'report.html'}"),
        (["--html", str(tmp_path / "r.md"), "-o", str(tmp_path / "r.md")],
         "--html and --output name the same file"),
    ]:  # fmt: skip
        assert main(["report", str(hand_results), *argv]) == 2
        assert message in " ".join(capsys.readouterr().err.split())
    assert hand_results.read_bytes() == before
    other = tmp_path / "other.jsonl"
    shutil.copyfile(hand_results, other)  # a results file that is not being read: refused too
    assert main(["report", str(hand_results), "--html", str(other)]) == 2
    assert "holds tlbench run records" in capsys.readouterr().err


def test_html_combines_with_the_other_outputs(hand_results, tmp_path, capsys):
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    argv = ["report", str(hand_results), "--format", "markdown", "-o", str(md), "--html", str(page)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"report: {md}" in out and f"html: {page}" in out
    assert "| big        | finetune" in md.read_text()
    grouped = Page(page.read_text(encoding="utf-8"))
    assert list(grouped.tables) == [HOSTILE, "flowers"]  # in dataset order, as in the table
    # Grouped by strategy, the dataset becomes a column, as in every other format.
    assert main(["report", str(hand_results), "--group-by", "strategy", "--html", str(page)]) == 0
    by_strategy = Page(page.read_text(encoding="utf-8")).tables
    assert sorted(by_strategy) == ["finetune", "linear", "scratch"]
    assert [row[:2] for row in by_strategy["linear"]] == [[HOSTILE, "b"], ["flowers", "small"]]


def test_a_full_grid_adds_the_ranking_check(tmp_path):
    """Three backbones probed and fine-tuned: the page holds the ranking check of the report.

    Fine-tuned a > b > c (0.90, 0.80, 0.70); the probe (0.6, 0.7, 0.5) ranks b first, so
    following it costs 0.90 - 0.80 = 10.0 points, and its weighted tau is 2/11 = +0.18
    (worked out in tests/test_report_checks.py for the same accuracies).
    """
    path = tmp_path / "grid.jsonl"
    for name, probe, fine in (("a", 0.6, 0.9), ("b", 0.7, 0.8), ("c", 0.5, 0.7)):
        results.append(path, record(name, "linear", probe, 1.0, seed=0))
        results.append(path, record(name, "finetune", fine, 10.0, seed=0))
    page = tmp_path / "r.html"
    assert main(["report", str(path), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert_standalone(text, Page(text))
    start = text.index('<section id="ranking">')
    ranking = text[start : text.index("</section>", start)]
    assert "ranking check: flowers: 3 backbones, against finetune" in ranking
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>.*?</td>", ranking)]
    assert cells[cells.index("linear probe accuracy") :][:3] == [
        "linear probe accuracy",
        "+0.18",
        "10.0",
    ]
    assert '<a href="#ranking">' in text
    # Without a full grid there is no check, and no section for it.
    assert main(["report", str(hand_records_path(tmp_path)), "--html", str(page)]) == 0
    assert 'id="ranking"' not in page.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless chromium through selenium, logging the console; skipped when either is missing."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "needs chromium and chromedriver: apt-get install chromium chromium-driver "
            "(Debian), then pip install 'tlbench[browser]'"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium: pip install 'tlbench[browser]'")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: selenium then never tries to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def real_results(tmp_path_factory) -> Path:
    """A small real grid on two datasets (one backbone has no pretrained weights, so its
    linear runs are skipped), two seeds, and a failed run whose reason is markup."""

    class SecondDataset:
        @tlbench.hookimpl
        def tlbench_register_datasets(self, register):
            register(testing.tiny_dataset("squares_b"))

    tmp = tmp_path_factory.mktemp("html")
    out = tmp / "runs.jsonl"
    config = RunConfig(
        backbones=["tiny", "tiny_random"],
        datasets=["tinyset", "squares_b"],
        strategies=["scratch", "linear"],
        seeds=[0, 1],
        image_size=16,
        hyperparameters={"epochs": 2, "batch_size": 16},
        out=str(out),
        cache_dir=str(tmp / "cache"),
        device="cpu",
    )
    plugins = tlbench.Plugins(
        entry_points=False, extra=[("tiny", TinyPlugin()), ("b", SecondDataset())]
    )
    records = Runner(config, plugins).run()
    assert {r["status"] for r in records} == {"ok", "skipped"}
    results.append(out, record("tiny", "finetune", None, 0, seed=0, dataset="tinyset",
                               status="failed", reason=HOSTILE))  # fmt: skip
    return out


def _open(browser, page: Path) -> list[dict]:
    browser.get(page.resolve().as_uri())
    # Alerts would mean the page ran a record's text as a script.
    assert browser.execute_script("return document.readyState") == "complete"
    return browser.get_log("browser")


@pytest.mark.parametrize("figure", [True, False], ids=["with-figure", "without-matplotlib"])
def test_the_page_in_headless_chromium(browser, real_results, tmp_path, monkeypatch, figure):
    from selenium.webdriver.common.by import By

    if figure:
        pytest.importorskip("matplotlib")
    else:
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = tmp_path / "report.html"
    assert main(["report", str(real_results), "--html", str(page)]) == 0
    errors = [e for e in _open(browser, page) if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors

    # One table per dataset, one row per run group: counted from the records themselves
    # (each backbone x strategy that ran on the dataset) and as the report groups them.
    records = results.read(real_results)
    expected = {}
    for r in records:
        c = r["config"]
        expected.setdefault(c["dataset"], set()).add((c["backbone"], c["strategy"]))
    groups = report.group_rows(report.summarize(records))
    assert {d: len(g) for d, g in groups.items()} == {d: len(s) for d, s in expected.items()}
    tables = browser.find_elements(By.CSS_SELECTOR, "table.comparison")
    shown = {
        t.get_attribute("data-section"): len(t.find_elements(By.CSS_SELECTOR, "tbody > tr"))
        for t in tables
    }
    assert shown == {"tinyset": 5, "squares_b": 4}  # tiny/tiny_random x scratch/linear (+ failed)
    assert shown == {d: len(s) for d, s in expected.items()}
    # The failure reason is shown as text in its row, and ran nothing.
    assert browser.execute_script("return document.scripts.length") == 0
    notes = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "td.note")]
    assert f"failed: {HOSTILE}" in notes
    assert any(n.startswith("skipped:") for n in notes)  # tiny_random has no weights to probe

    # Nothing fetched from anywhere: no resource but the page itself, no web address in it.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    refs = browser.execute_script(
        "return [...document.querySelectorAll('[src],[href]')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))"
    )
    assert all(r.startswith(("data:", "#")) for r in refs), refs
    images = browser.find_elements(By.CSS_SELECTOR, "figure img")
    if figure:
        (image,) = images
        assert image.get_attribute("src").startswith("data:image/svg+xml;base64,")
        width = browser.execute_script("return arguments[0].naturalWidth", image)
        assert width > 500 and image.size["width"] > 500  # decoded and drawn, not a broken icon
    else:
        assert not images
        assert (
            "pip install 'tlbench[plot]'" in browser.find_element(By.CSS_SELECTOR, ".missing").text
        )
    # The environment: the grid's runs on this torch, the hand-made one on its own; the
    # skipped runs never started, so they hold none, and the page says so.
    import torch

    envs = " ".join(browser.find_element(By.CSS_SELECTOR, "#environment").text.split())
    ours = sum((r.get("environment") or {}).get("torch") == torch.__version__ for r in records)
    assert ours == 12  # 2 datasets x (tiny: scratch, linear; tiny_random: scratch) x 2 seeds
    assert f"torch {torch.__version__} {ours} runs 2.5.0 1 run" in envs
    assert "4 record(s) hold no environment" in envs  # tiny_random linear, skipped

    # A screenshot of the whole page: the window grown until its viewport holds it.
    for _ in range(3):
        page_height, viewport = browser.execute_script(
            "return [document.documentElement.scrollHeight, window.innerHeight]"
        )
        if viewport >= page_height:
            break
        grown = browser.get_window_size()["height"] + page_height - viewport
        browser.set_window_size(1400, grown)
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
