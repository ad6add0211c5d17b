"""Write docs/report-page.png: the `tlbench report --html` page of the reference results,
as headless chromium draws it.

    python docs/report_page.py          # from the repository root

Needs matplotlib, chromium and chromedriver (Debian: apt-get install chromium
chromium-driver) and selenium (pip install 'tlbench[browser]').
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = ["results/flowers12-cpu.jsonl", "results/flowers12-shots.jsonl"]
WIDTH = 1400


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        command = [sys.executable, "-m", "tlbench", "report", *RESULTS, "--html", str(page)]
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        options = Options()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={WIDTH},1000", "--hide-scrollbars"):  # fmt: skip
            options.add_argument(arg)
        driver = webdriver.Chrome(
            service=Service(shutil.which("chromedriver") or "chromedriver"), options=options
        )
        try:
            driver.get(page.as_uri())
            # The whole page in one shot: the window grown until its viewport holds it all
            # (the window's size includes what the browser draws around the page).
            for _ in range(3):
                page_height, viewport = driver.execute_script(
                    "return [document.documentElement.scrollHeight, window.innerHeight]"
                )
                if viewport >= page_height:
                    break
                driver.set_window_size(
                    WIDTH, driver.get_window_size()["height"] + page_height - viewport
                )
            out = REPO / "docs" / "report-page.png"
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    print(f"wrote {out.relative_to(REPO)} ({' '.join(['tlbench report', *RESULTS])} --html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
