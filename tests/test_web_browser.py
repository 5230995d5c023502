"""The verification page in a real browser: Debian's headless Chromium driven by
Selenium through /usr/bin/chromedriver, against a real `prov serve` and a separate
`prov web`, uploading each of the demo's files.

Screenshots go to tests/output/web/ (git-ignored). The tests fail, saying what to
install, when the chromium and chromium-driver packages are missing (`.ci/run` installs
them).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, DemoSite, demo_site

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = ROOT / "tests" / "output" / "web"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _chromium_installed() -> None:
    """These tests fail, saying what to install, where headless Chromium is missing
    (`.ci/run` installs it)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is not installed: apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    with demo_site(tmp_path_factory.mktemp("web-browser"), web_separate=True) as s:
        yield s


def _driver(profile: Path, javascript: bool) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile; the driver path is given, so Selenium
    Manager never downloads anything."""
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,1600",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=opts, service=service)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = _driver(tmp_path_factory.mktemp("chromium-profile"), javascript=True)
    driver.set_page_load_timeout(120)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _verify(driver: webdriver.Chrome, site: DemoSite, file: Path, sidecar: Path | None) -> str:
    """Upload ``file`` (and its sidecar) through the page; the verdict shown."""
    driver.get(site.web + "/")
    if sidecar is not None:
        driver.find_element(By.CSS_SELECTOR, "details.sidecar summary").click()
        driver.find_element(By.ID, "sidecar").send_keys(str(sidecar))
    driver.find_element(By.ID, "file").send_keys(str(file))
    driver.find_element(By.ID, "verify-button").click()
    status = WebDriverWait(driver, 240).until(EC.visibility_of_element_located((By.ID, "status")))
    return str(status.text)


CASES = {
    "signed_original": ("hopper", False, "SIGNED_ORIGINAL"),
    "derived": ("derived", False, "DERIVED"),
    "tampered": ("tampered", True, "TAMPERED"),
    "unsigned": ("unsigned", False, "UNSIGNED"),
    "video_derived": ("small_video", False, "DERIVED"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_page_shows_the_verdict_of_each_demo_file(
    browser: webdriver.Chrome, site: DemoSite, case: str
) -> None:
    attr, with_sidecar, expected = CASES[case]
    file: Path = getattr(site.files, attr)
    sidecar = Path(str(file) + ".prov") if with_sidecar else None
    assert _verify(browser, site, file, sidecar) == expected
    page = browser.find_element(By.ID, "report").text
    assert file.name in page
    assert "advisory" in browser.find_element(By.ID, "detector-title").text.lower()
    browser.save_screenshot(str(SHOTS / f"{case}.png"))
    if case == "video_derived":
        # the signed video's matched time range is stated
        assert re.search(r"matches the signed video from 0:00\.0 to 0:0\d\.\d", page), page
    if expected == "UNSIGNED":
        assert "Entry #" not in page
        return
    link = browser.find_element(By.ID, "log-entry-link")
    index = link.text.split("#")[1]
    link.click()
    title = WebDriverWait(browser, 60).until(
        EC.visibility_of_element_located((By.ID, "entry-title"))
    )
    assert title.text == f"Log entry #{index}"
    assert "Included" in browser.find_element(By.ID, "inclusion-state").text
    browser.save_screenshot(str(SHOTS / f"{case}_entry.png"))


def test_report_json_download_is_the_api_object(browser: webdriver.Chrome, site: DemoSite) -> None:
    assert _verify(browser, site, site.files.hopper, None) == "SIGNED_ORIGINAL"
    href = browser.find_element(By.ID, "download-json").get_attribute("href") or ""
    assert href.startswith("data:application/json;base64,")
    report = json.loads(base64.b64decode(href.split(",", 1)[1]))
    assert report["status"] == "SIGNED_ORIGINAL"
    assert report["path"] == "hopper.jpg"
    assert report["evidence"]["hash_match"] is True


def test_every_form_control_has_a_label(browser: webdriver.Chrome, site: DemoSite) -> None:
    for path in ("/", "/log"):
        browser.get(site.web + path)
        for control in browser.find_elements(By.CSS_SELECTOR, "input, button"):
            ident = control.get_attribute("id") or control.get_attribute("name")
            named = browser.execute_script(
                "var e = arguments[0]; return (e.labels && e.labels.length) || e.textContent.trim()"
                " || e.getAttribute('aria-label');",
                control,
            )
            assert named, f"{path}: a form control without a label ({ident!r})"


def test_without_javascript_the_form_still_uploads(tmp_path: Path, site: DemoSite) -> None:
    driver = _driver(tmp_path / "profile", javascript=False)
    try:
        assert _verify(driver, site, site.files.derived, None) == "DERIVED"
        driver.save_screenshot(str(SHOTS / "no_javascript.png"))
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_the_form_is_reachable_with_the_keyboard(browser: webdriver.Chrome, site: DemoSite) -> None:
    browser.get(site.web + "/")
    reached = []
    for _ in range(12):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        reached.append(active.get_attribute("id") or active.tag_name)
    assert reached.index("file") < reached.index("verify-button"), reached
    # the drop zone shows where the keyboard focus is
    browser.execute_script("document.getElementById('file').focus()")
    outline = browser.execute_script(
        "return getComputedStyle(document.getElementById('drop')).outlineStyle"
    )
    assert outline == "solid"


def test_crop_overlay_is_marked_by_the_image_thresholds(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """The cat photo through a server running the shipped detector: each crop drawn over
    the thumbnail is styled by its band (colour and a stroke pattern, so not by colour
    alone), and the legend's counts are the boxes drawn."""
    from tests.conftest import SAMPLES, read_line, start_server

    srv = start_server(
        tmp_path / "det.db", "--detector", "--detector-device", "cpu", "--http", "127.0.0.1:0"
    )
    try:
        web = read_line(srv.proc, "web on ")
        browser.get(web + "/")
        browser.find_element(By.ID, "file").send_keys(str(SAMPLES / "chelsea.png"))
        browser.find_element(By.ID, "verify-button").click()
        WebDriverWait(browser, 240).until(EC.visibility_of_element_located((By.ID, "crop-key")))
        WebDriverWait(browser, 30).until(
            EC.visibility_of_element_located((By.CSS_SELECTOR, "img.thumb"))
        )
        boxes = [
            (
                (b.get_attribute("class") or "").split()[-1].removeprefix("crop-"),
                b.value_of_css_property("stroke"),
                b.value_of_css_property("stroke-dasharray"),
            )
            for b in browser.find_elements(By.CSS_SELECTOR, "svg.overlay rect.crop")
        ]
        key = browser.find_element(By.ID, "crop-key").text
        thresholds = browser.find_element(By.ID, "detector-thresholds").text
        browser.save_screenshot(str(SHOTS / "crop_overlay.png"))
    finally:
        srv.stop()
    assert len(boxes) == 64 and "likely generated from 0." in thresholds, thresholds
    styles = {tone: {(c, d) for t, c, d in boxes if t == tone} for tone in ("high", "mid", "low")}
    for tone, words in (("high", "red, solid"), ("mid", "grey, dashed"), ("low", "green, dotted")):
        found = re.search(rf"{words}: (\d+)", key)
        assert found, (words, key)
        n = int(found.group(1))
        assert n == sum(1 for t, _, _ in boxes if t == tone), (tone, key)
        assert len(styles[tone]) <= 1, styles  # one style per band
    drawn = [s for tone in ("high", "mid", "low") for s in styles[tone]]
    # colour and stroke pattern both differ between bands: not colour alone
    assert len({c for c, _ in drawn}) == len(drawn) == len({d for _, d in drawn}), styles
