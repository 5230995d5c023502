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


def _driver(profile: Path, javascript: bool, extra: tuple[str, ...] = ()) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile and the command-line flags ``extra``; the
    driver path is given, so Selenium Manager never downloads anything."""
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
        *extra,
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


def _verify_here(driver: webdriver.Chrome, file: Path, sidecar: Path | None = None) -> str:
    """Verify ``file`` (and ``sidecar``) with the page's script on the page as it stands,
    without reloading it; the text of the result shown."""
    if sidecar is not None:
        details = driver.find_element(By.CSS_SELECTOR, "details.sidecar")
        if details.get_attribute("open") is None:
            details.find_element(By.TAG_NAME, "summary").click()
        driver.find_element(By.ID, "sidecar").send_keys(str(sidecar))
    driver.find_element(By.ID, "file").send_keys(str(file))
    old = driver.find_element(By.ID, "result")
    driver.find_element(By.ID, "verify-button").click()
    WebDriverWait(driver, 240).until(EC.staleness_of(old))
    return str(driver.find_element(By.ID, "result").text)


def test_files_verified_one_after_another_each_get_their_own_verdict(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """With the script, the form stays on the page between files: the sidecar chosen for
    one file must not travel with the next (it made an unrelated photo TAMPERED), while
    the same pair may be sent again."""
    browser.get(site.web + "/")
    tampered = site.files.tampered
    sidecar = Path(str(tampered) + ".prov")
    first = _verify_here(browser, tampered, sidecar)
    assert "TAMPERED" in first and "Sidecar\nsent with the file" in first, first
    again = browser.find_element(By.ID, "result")
    browser.find_element(By.ID, "verify-button").click()  # the same pair, once more
    WebDriverWait(browser, 240).until(EC.staleness_of(again))
    assert "Sidecar\nsent with the file" in browser.find_element(By.ID, "result").text
    second = _verify_here(browser, site.files.unsigned)
    assert browser.find_element(By.ID, "status").text == "UNSIGNED", second
    assert "Sidecar\nnone" in second and "cat.png" in second, second
    third = _verify_here(browser, site.files.derived)
    assert browser.find_element(By.ID, "status").text == "DERIVED", third
    assert browser.switch_to.active_element.get_attribute("id") == "verdict-title"


def test_an_upload_cancelled_mid_way_leaves_the_page_usable(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """An upload stopped mid-way, by the browser's Stop (Esc: window.stop()) or by the
    page's Cancel button, says so and frees the Verify button (the page stayed at
    "Uploading 28%" with the button disabled); the next file is then verified."""
    browser.get(site.web + "/")
    browser.execute_cdp_cmd("Network.enable", {})
    slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 16384}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", slow)
    text = browser.find_element(By.ID, "progress-text")
    button = browser.find_element(By.ID, "verify-button")
    try:
        for how in ("stop", "cancel-button"):
            browser.find_element(By.ID, "file").send_keys(str(site.files.video))  # 373 kB
            button.send_keys(Keys.ENTER)  # from the keyboard
            WebDriverWait(browser, 20).until(lambda _: text.text.startswith("Uploading "))
            # the focus moves from the disabled Verify to Cancel (it fell to the body)
            assert browser.switch_to.active_element.get_attribute("id") == "cancel-button"
            if how == "stop":
                browser.execute_script("window.stop()")
            else:
                browser.switch_to.active_element.send_keys(Keys.ENTER)
            WebDriverWait(browser, 10).until(lambda _: button.is_enabled())
            assert "cancelled" in text.text and "nothing was verified" in text.text, text.text
            assert not browser.find_element(By.ID, "cancel-button").is_displayed()
            assert browser.switch_to.active_element.get_attribute("id") == "verify-button"
    finally:
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1}
        )
    _verify_here(browser, site.files.hopper)
    assert browser.find_element(By.ID, "status").text == "SIGNED_ORIGINAL"


def test_an_answer_that_is_no_report_is_shown(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """Behind a reverse proxy whose upstream is down, the upload's answer is the proxy's
    own 502 page, not one of ours: the page says so (it showed nothing at all)."""
    import http.server
    import threading
    import urllib.request

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the page and its files, from `prov web`
            with urllib.request.urlopen(site.web + self.path) as up:
                body = up.read()
                self.send_response(up.status)
                for name in ("Content-Type", "Content-Security-Policy"):
                    self.send_header(name, up.headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # as nginx answers when its upstream is down
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{proxy.server_address[1]}/")
        shown = _verify_here(browser, site.files.hopper)
    finally:
        proxy.shutdown()
        proxy.server_close()
    alert = browser.find_element(By.CSS_SELECTOR, "#result [role=alert]")
    assert "HTTP 502" in alert.text and "502 Bad Gateway" in alert.text, shown
    assert "nothing was verified" in alert.text, shown
    assert browser.find_element(By.ID, "verify-button").is_enabled()


def test_no_page_is_wider_than_a_375_px_phone(browser: webdriver.Chrome, site: DemoSite) -> None:
    """At 375 CSS px (a small phone) no page scrolls sideways: the log entry's signature
    line ("PAE(application/vnd.provenance.claim.v1+protobuf, claim)") and the API
    page's table of endpoints ran past the right edge, and so did the error page of a
    log search for a 64-hex-digit hash the log does not hold (the hash in its message
    did not wrap: 672 px). Wide tables scroll in their box."""
    metrics = {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    wide = {}
    slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8192}
    try:
        _verify(browser, site, site.files.small_video, None)  # the longest report
        pages = ["/", "/log", "/api", "/log/entries/1", "/log/consistency?first=1", "/nowhere"]
        pages.append("/log/find?q=" + "ab" * 32)  # not in the log: its error names the hash
        for path in ["(report)", *pages]:
            if path != "(report)":
                browser.get(site.web + path)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            if width > 375:
                wide[path] = width
                browser.save_screenshot(str(SHOTS / f"narrow{path.replace('/', '_')}.png"))
        # while a file uploads, the bar keeps a visible length beside its text and the
        # Cancel button (squeezed to 0 px before they wrapped)
        browser.get(site.web + "/")
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", slow)
        browser.find_element(By.ID, "file").send_keys(str(site.files.video))
        browser.find_element(By.ID, "verify-button").click()
        text = browser.find_element(By.ID, "progress-text")
        WebDriverWait(browser, 20).until(lambda _: text.text.startswith("Uploading "))
        bar = browser.find_element(By.ID, "progress").size["width"]
        width = browser.execute_script("return document.documentElement.scrollWidth")
        browser.save_screenshot(str(SHOTS / "narrow_uploading.png"))
        browser.find_element(By.ID, "cancel-button").click()
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1}
        )
    assert not wide, wide
    assert bar >= 150 and width <= 375, (bar, width)


@pytest.mark.parametrize("javascript", [True, False])
def test_a_file_name_with_quotes_is_shown_as_it_is(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path, javascript: bool
) -> None:
    """Chromium percent-encodes ``"`` in the multipart file name (the HTML form encoding:
    ``"`` as %22, LF as %0A, CR as %0D); the page showed ``%22``. The real name is shown,
    as text (the ``<b>`` in it is no element), in the report and in the tab's title, by
    the page's script and without it."""
    name = 'say "cheese" <b>1.jpg'
    file = tmp_path / name
    shutil.copyfile(site.files.hopper, file)
    if javascript:
        driver = browser
        browser.get(site.web + "/")
        _verify_here(browser, file)
    else:
        driver = _driver(tmp_path / "profile", javascript=False)
    try:
        if not javascript:
            _verify(driver, site, file, None)
        assert driver.find_element(By.ID, "status").text == "SIGNED_ORIGINAL"
        assert driver.find_element(By.CSS_SELECTOR, "#report .file-name").text == name
        assert not driver.find_elements(By.CSS_SELECTOR, "#report .file-name b")
        assert driver.title.startswith(f"SIGNED_ORIGINAL: {name} ")
    finally:
        if not javascript:
            driver.quit()


#: The exact text of the element matching a CSS selector (WebElement.text drops LRM).
_EXACT = "return document.querySelector(arguments[0]).textContent"


def _choose(browser: webdriver.Chrome, site: DemoSite, file: Path) -> tuple[Path, str]:
    """``file`` (a copy of the demo's signed photo made there) chosen on a fresh page,
    not sent; it and the exact text of the line naming it ("NAME (SIZE)")."""
    shutil.copyfile(site.files.hopper, file)
    browser.get(site.web + "/")
    browser.find_element(By.ID, "file").send_keys(str(file))
    return file, str(browser.execute_script(_EXACT, "#chosen"))


def test_bidi_controls_in_a_file_name_are_shown_as_code_points(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """A name holding bidirectional controls ("photo\\u202egpj.exe" reads
    "photoexe.jpg") is shown with each control as its escape, as the CLI prints it
    (`provenance.terminal.shown`): in the report, the tab's title and the line naming
    the chosen file before it is sent."""
    file, chosen = _choose(
        browser, site, tmp_path / "photo\u202egpj.exe\u2066x\u2069\u200e\u200f\u200b\ufeff.jpg"
    )
    escaped = "photo\\u202egpj.exe\\u2066x\\u2069\\u200e\\u200f\\u200b\\ufeff.jpg"
    assert chosen.startswith(escaped + " (")
    browser.find_element(By.ID, "file").clear()
    _verify_here(browser, file)
    assert browser.find_element(By.ID, "status").text == "SIGNED_ORIGINAL"
    assert browser.execute_script(_EXACT, "#report .file-name") == escaped
    assert browser.title.startswith(f"SIGNED_ORIGINAL: {escaped} ")
    for text in (browser.title, browser.execute_script(_EXACT, "#result")):
        assert not re.search("[\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]", text), text


def test_an_emoji_in_a_file_name_is_shown_as_it_is(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """The page's rule for names (data-unsafe) escapes lone surrogates, a range
    U+D800-U+DFFF: its RegExp has the "u" flag, so an emoji (a surrogate pair in a
    JavaScript string) is shown as it is, not as ``\\ud83d\\udcf7``."""
    file, chosen = _choose(browser, site, tmp_path / "caf\u00e9 \U0001f4f7.jpg")
    assert chosen.startswith(file.name + " ("), chosen


_SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


def test_tags_soft_hyphens_and_stray_selectors_in_a_file_name_are_escaped(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """The page's script escapes the characters past U+FFFF the rule names (Tag
    characters, a hidden ASCII text) as the server does (``\\U000e0068``), and the soft
    hyphen and a variation selector after ASCII; an emoji's own selector and a flag of
    Scotland are kept (a
    review: the rule missed them, and the script read only a pair's first half)."""
    _, chosen = _choose(
        browser, site, tmp_path / f"pay\u00adpal\ufe0f\U000e0068 \u2764\ufe0f{_SCOTLAND}.jpg"
    )
    assert chosen.startswith(f"pay\\xadpal\\ufe0f\\U000e0068 \u2764\ufe0f{_SCOTLAND}.jpg ("), chosen


def test_hangul_fillers_in_a_file_name_are_escaped_and_korean_kept(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """The page's script escapes the Hangul fillers that draw nothing as the server does
    (``\\u3164``, ``\\uffa0``, a lone ``\\u115f``) and keeps a conjoining syllable
    with its filler vowel (a review: the rule showed the fillers raw)."""
    _, chosen = _choose(browser, site, tmp_path / "pay\u3164pal\uffa0\u115f \ud55c\u1100\u1160.jpg")
    assert chosen.startswith("pay\\u3164pal\\uffa0\\u115f \ud55c\u1100\u1160.jpg ("), chosen


def _drop(driver: webdriver.Chrome, *files: Path) -> None:
    """Drop ``files`` on the page's drop zone together, as a file manager drops a
    selection: a drop event whose DataTransfer holds them, in this order (their File
    objects are read from a temporary multiple-file input that the test adds)."""
    driver.execute_script(
        "var i = document.createElement('input'); i.type = 'file'; i.multiple = true;"
        " i.id = 'test-files'; document.body.appendChild(i);"
    )
    driver.find_element(By.ID, "test-files").send_keys("\n".join(str(f) for f in files))
    driver.execute_script(
        "var dt = new DataTransfer(), i = document.getElementById('test-files');"
        " for (var k = 0; k < i.files.length; k++) { dt.items.add(i.files[k]); }"
        " i.remove();"
        " document.getElementById('drop').dispatchEvent("
        "   new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
    )


def test_a_file_dropped_with_its_sidecar_is_verified_with_it(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """A file and its FILE.prov dropped together (the demo says to drop the edited photo
    "with its .prov sidecar") are sent as the file and its sidecar, in either order.
    Before, the page sent the first dropped file alone: the sidecar was dropped without a
    word and the edited photo read DERIVED, not TAMPERED; or, the sidecar first, the
    sidecar itself was verified ("unsupported or unrecognised file format")."""
    tampered = site.files.tampered
    sidecar = Path(str(tampered) + ".prov")
    for files in ((tampered, sidecar), (sidecar, tampered)):
        browser.get(site.web + "/")
        _drop(browser, *files)
        chosen = browser.find_element(By.ID, "chosen").text
        assert tampered.name in chosen and sidecar.name in chosen, chosen
        browser.find_element(By.ID, "verify-button").click()
        status = WebDriverWait(browser, 240).until(
            EC.visibility_of_element_located((By.ID, "status"))
        )
        assert status.text == "TAMPERED", browser.find_element(By.ID, "result").text
        assert "Sidecar\nsent with the file" in browser.find_element(By.ID, "result").text


def test_of_several_files_dropped_the_page_says_which_one_it_verifies(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """Two photos dropped at once: the page verifies one at a time and says which, and
    that the other was not sent (before: the first was verified without a word about
    the second)."""
    browser.get(site.web + "/")
    _drop(browser, site.files.hopper, site.files.unsigned)
    chosen = browser.find_element(By.ID, "chosen").text
    assert site.files.hopper.name in chosen and "2 files dropped" in chosen, chosen
    assert "one at a time" in chosen and "only this one is sent" in chosen, chosen


def test_a_long_file_name_does_not_widen_the_page(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """A file name of 240 characters without a space, chosen and verified with the
    script, wraps where the page shows it: the name under the drop zone (the script's
    `#chosen`) ran 900 px past the right edge of a 1200 px window (scrollWidth 2096),
    and the whole page scrolled sideways; the report's own heading already wrapped."""
    long_name = tmp_path / ("A" * 240 + ".jpg")
    shutil.copyfile(site.files.derived, long_name)
    browser.get(site.web + "/")
    browser.find_element(By.ID, "file").send_keys(str(long_name))
    browser.find_element(By.ID, "verify-button").click()
    WebDriverWait(browser, 240).until(EC.visibility_of_element_located((By.ID, "status")))
    sizes = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert sizes[0] <= sizes[1], sizes


def test_a_file_that_could_not_be_checked_says_so_in_the_tab_title(
    browser: webdriver.Chrome, site: DemoSite, tmp_path: Path
) -> None:
    """A verified photo, then a file that is no media, through the page with its script:
    the tab's title says the second could not be checked. Before, it went back to
    "Verify a file", the blank form's title, while the page showed the error (the log
    explorer's error pages were already titled "Error 400")."""
    assert _verify(browser, site, site.files.hopper, None) == "SIGNED_ORIGINAL"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    browser.find_element(By.ID, "verify-button").click()
    alert = WebDriverWait(browser, 240).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, "#result [role=alert]"))
    )
    assert "unsupported or unrecognised file format" in alert.text
    assert browser.title.startswith("Error: This could not be checked"), browser.title


def test_after_a_report_every_form_control_still_has_its_label(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """A report shown above the form (put there by the script), then the form's controls:
    each keeps its label and every id on the page is one element's. Before, the report's
    "Sidecar" row was ``<dd id="sidecar">``, the id of the form's sidecar input too; the
    label ``for="sidecar"`` then named the row (first in the page), and the input lost
    its accessible name ("Sidecar file (optional)")."""
    assert _verify(browser, site, site.files.hopper, None) == "SIGNED_ORIGINAL"
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('[id]'), function (e) { return e.id; })"
    )
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for control in browser.find_elements(By.CSS_SELECTOR, "#verify-form input"):
        labels = browser.execute_script("return arguments[0].labels.length", control)
        assert labels, f"a form control without a label ({control.get_attribute('id')!r})"


def test_the_log_pages_forms_and_links_answer_in_a_browser(
    browser: webdriver.Chrome, site: DemoSite
) -> None:
    """Each log page form, submitted by Chromium as a person would (the optional fields
    left empty, which a browser sends as ``name=``), and each link those pages show
    answers its page, not a 400 about its query: the forms' and links' parameters are
    those the routes read (`provenance.web.api.reads`)."""
    bad: dict[str, str] = {}

    def check(what: str) -> None:
        if browser.title.startswith("Error") or "unknown query parameter" in browser.page_source:
            bad[what] = browser.current_url

    browser.get(site.web + "/log")
    browser.find_element(By.ID, "q").send_keys("1")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    WebDriverWait(browser, 60).until(EC.url_contains("/log/entries/1"))
    check("find form")
    browser.get(site.web + "/log")
    device = browser.find_element(By.CSS_SELECTOR, "a[href^='/log/devices/']")
    device_id = str(device.get_attribute("href")).rsplit("/", 1)[1]
    browser.find_element(By.ID, "device-id").send_keys(device_id)
    browser.find_element(By.CSS_SELECTOR, "form[action='/log/device'] button").click()
    WebDriverWait(browser, 60).until(EC.url_contains("/log/devices/"))
    check("device form")
    browser.get(site.web + "/log")
    browser.find_element(By.ID, "first").send_keys("1")
    browser.find_element(By.CSS_SELECTOR, "form[action='/log/consistency'] button").click()
    WebDriverWait(browser, 60).until(EC.url_contains("/log/consistency?"))
    assert "second=&first_root=" in browser.current_url  # the empty fields were sent
    check("consistency form")
    for page in ["/log", "/log/entries/1", f"/log/devices/{device_id}", browser.current_url]:
        browser.get(page if page.startswith("http") else site.web + page)
        hrefs = {
            str(a.get_attribute("href"))
            for a in browser.find_elements(By.CSS_SELECTOR, "main a[href]")
            if str(a.get_attribute("href")).startswith(site.web)
        }
        for href in sorted(hrefs):
            browser.get(href)
            if "/api/" in href or href.endswith(".json"):
                if "unknown query parameter" in browser.page_source or '"error"' in (
                    browser.page_source
                ):
                    bad[href] = browser.page_source[:300]
            else:
                check(href)
    assert not bad, bad
