"""Screenshots of the verification page for docs/ (run against `make web`).

    python scripts/web_screenshot.py http://127.0.0.1:8080 .web-demo/newsroom/rocket_resized.jpg docs/web.png [WIDTH HEIGHT]

Uploads FILE through the page in headless Chromium (Debian's chromium and
chromium-driver), saves the viewport as a palette PNG (small enough to commit).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from provenance.core.argtypes import positive_int


def main(url: str, file: str, out: str, width: int = 1100, height: int = 1100) -> None:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
        ):
            opts.add_argument(flag)
        driver = webdriver.Chrome(
            options=opts, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
        )
        try:
            driver.get(url)
            driver.find_element(By.ID, "file").send_keys(str(Path(file).resolve()))
            driver.find_element(By.ID, "verify-button").click()
            WebDriverWait(driver, 300).until(EC.visibility_of_element_located((By.ID, "status")))
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script(
                    "var i = document.querySelector('img.thumb');"
                    " return !i || (i.complete && !i.hidden);"
                )
            )
            driver.execute_script("window.scrollTo(0, 0)")
            png = Path(out).with_suffix(".full.png")
            driver.save_screenshot(str(png))
        finally:
            driver.quit()
    img = Image.open(png).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    png.unlink()
    print(f"{out}: {Path(out).stat().st_size:,} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:8080 (make web)")
    parser.add_argument("file", help="the file to upload through the page")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument(
        "width", nargs="?", type=positive_int, default=1100, help="window width, px"
    )
    parser.add_argument(
        "height", nargs="?", type=positive_int, default=1100, help="window height, px"
    )
    a = parser.parse_args()
    main(a.url, a.file, a.out, a.width, a.height)
