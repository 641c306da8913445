"""Fixtures for the management web UI's browser tests.

The browser is Debian's chromium, driven through Debian's chromedriver by Selenium:
both paths are given explicitly, so Selenium never downloads a browser or a driver.

The broker is a Warren of its own (``WARREN_BIN``, default ``target/release/warren``)
started on free ports with an empty data directory, so these tests can import
definitions and create users without touching another suite's broker. Set
``UI_MANAGEMENT_URL`` and ``UI_AMQP_URL`` to test a running broker instead.
"""

import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager fetch anything

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "target" / "ui-screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def set_viewport(driver, width, height):
    """Makes the page's viewport exactly width x height CSS pixels (a window cannot be
    narrower than about 500 px; the emulated viewport can)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


class Broker:
    """Where the broker under test listens, and a small HTTP API client for set-up."""

    def __init__(self, management_url, amqp_url):
        self.url = management_url.rstrip("/")
        self.amqp_url = amqp_url

    def api(self, method, path, body=None, user=("guest", "guest")):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/api" + path, data=data, method=method)
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None)


def _start_warren(tmp):
    binary = os.environ.get("WARREN_BIN", str(ROOT / "target" / "release" / "warren"))
    if not os.path.exists(binary):
        pytest.fail(f"no Warren binary at {binary}: run cargo build --release first")
    log_path = os.path.join(tmp, "warren.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--management-listen", "127.0.0.1:0",
         "--prometheus-listen", "127.0.0.1:0", "--stream-listen", "127.0.0.1:0",
         "--data-dir", os.path.join(tmp, "data")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    deadline = time.monotonic() + 30
    mport = aport = None
    while time.monotonic() < deadline and not (mport and aport):
        if proc.poll() is not None:
            pytest.fail("warren exited early:\n" + open(log_path).read())
        text = open(log_path, errors="replace").read()
        m = re.search(r"Management plugin: HTTP \(non-TLS\) listener started on port (\d+)", text)
        a = re.search(r"AMQP listener on [^ ]*:(\d+)", text)
        mport = m and m.group(1)
        aport = a and a.group(1)
        time.sleep(0.05)
    if not (mport and aport):
        proc.kill()
        pytest.fail("warren did not start:\n" + open(log_path).read())
    return proc, f"http://127.0.0.1:{mport}", f"amqp://guest:guest@127.0.0.1:{aport}/%2F"


@pytest.fixture(scope="session")
def broker():
    if os.environ.get("UI_MANAGEMENT_URL"):
        yield Broker(os.environ["UI_MANAGEMENT_URL"], os.environ["UI_AMQP_URL"])
        return
    tmp = tempfile.mkdtemp(prefix="warren-ui-")
    proc, murl, aurl = _start_warren(tmp)
    try:
        yield Broker(murl, aurl)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def downloads():
    d = tempfile.mkdtemp(prefix="warren-ui-downloads-")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(downloads):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("unhandledPromptBehavior", "ignore")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def driver(browser, request):
    """The browser, with a screenshot of where each test ended saved under target/."""
    set_viewport(browser, 1280, 800)
    yield browser
    try:
        browser.switch_to.alert.dismiss()
    except Exception:
        pass
    browser.save_screenshot(str(SHOTS / f"{request.node.name}.png"))
