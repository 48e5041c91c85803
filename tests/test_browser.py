"""The app in a real browser: ``streamlit run`` on 127.0.0.1 driven by Debian's Chromium via Playwright.

Needs ``apt-get install chromium`` and ``pip install playwright`` (never
``playwright install``: it downloads its own browsers). Without them these tests
skip, except in CI (``CI=true``), where a missing browser fails them.

The webcam is Chromium's fake capture device fed with a .y4m video made at test
time from a face photo. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "src" / "agegender" / "app.py"
ASSETS = Path(__file__).resolve().parent / "assets"
WILD = Path(os.environ.get("WILD_SAMPLES_DIR", REPO.parent / "shared" / "datasets" / "wild_samples"))
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: The group photo to upload, from shared/ when present (expected count from its faces.csv).
GROUP_PHOTO = "fnp_multiface.jpg"
TIMEOUT_MS = 180_000


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false; in CI fail instead (a skip there would hide a missing install)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# -- media ----------------------------------------------------------------------------------------
def group_photo() -> tuple[Path, int]:
    table = WILD / "group_photos" / "faces.csv"
    if table.is_file():
        with open(table, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["file"] == GROUP_PHOTO and row["expected_faces"].isdigit():
                    return WILD / "group_photos" / row["file"], int(row["expected_faces"])
    return ASSETS / "group3.jpg", 3


def write_y4m(photo: Path, target: Path, size: tuple[int, int] = (320, 240), frames: int = 10) -> Path:
    """A YUV4MPEG2 video (4:2:0, 'C420jpeg') showing ``photo`` fitted into ``size``, for Chromium's fake camera."""
    width, height = size
    image = Image.open(photo).convert("RGB")
    image.thumbnail(size, Image.LANCZOS)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    y, cb, cr = canvas.convert("YCbCr").split()  # full-range BT.601, as 'C420jpeg' says
    half = (width // 2, height // 2)
    planes = (np.asarray(y).tobytes() + np.asarray(cb.resize(half, Image.BOX)).tobytes()
              + np.asarray(cr.resize(half, Image.BOX)).tobytes())
    with open(target, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(b"FRAME\n" + planes)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install playwright; never `playwright install`)")
    require(Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as api:
        yield api


@pytest.fixture(scope="module")
def app_model(request) -> Path:
    """The default model when there is one, else the session's tiny trained model."""
    from agegender.config import default_model_path

    path = default_model_path()
    return path if path.is_file() else request.getfixturevalue("tiny_model").path


@pytest.fixture(scope="module")
def server(app_model, tmp_path_factory):
    """``streamlit run src/agegender/app.py`` on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, AGEGENDER_MODEL=str(app_model), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("AGEGENDER_ICE_SERVERS", None)
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"--- streamlit log ({log}) ---\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory) -> Path:
    photo = ASSETS / "face.jpg"
    return write_y4m(photo, tmp_path_factory.mktemp("camera") / "face.y4m")


@pytest.fixture(scope="module")
def browser(playwright_api, fake_camera):
    browser = playwright_api.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                              f"--use-file-for-fake-video-capture={fake_camera.resolve()}"])
    yield browser
    browser.close()


@pytest.fixture
def page(browser, server, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["camera"], origin=server)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    messages = []
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    try:
        page.goto(server)
        page.get_by_role("heading", name="Age and gender estimation").wait_for()
        page.locator('[data-testid="stSidebar"] [data-testid="stTable"]').wait_for()  # model loaded
        yield page
    finally:
        screenshot(page, f"last_{request.node.name}.png")  # the page as the test left it, pass or fail
        print("--- browser console ---\n" + "\n".join(messages[-40:]))
        context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def main_area(page):
    return page.locator('[data-testid="stMain"]')


def wait_for_rows(page, count: int, timeout_ms: int = TIMEOUT_MS) -> list[str]:
    """The rows of the first table in the main area, once it has ``count`` of them."""
    rows = main_area(page).locator('[data-testid="stTable"] tbody tr')
    deadline = time.monotonic() + timeout_ms / 1000
    while rows.count() != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} rows, have {rows.count()}: {rows.all_inner_texts()}")
        page.wait_for_timeout(250)
    return rows.all_inner_texts()


def wait_for_annotated_image(page):
    """The (last) image in the main area, once loaded, scrolled into view for the screenshot."""
    image = main_area(page).locator('[data-testid="stImage"] img').last
    image.wait_for()
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return image


# -- tests ----------------------------------------------------------------------------------------
def test_upload_group_photo(page):
    photo, expected = group_photo()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(photo))
    rows = wait_for_rows(page, expected)
    image = wait_for_annotated_image(page)
    assert image.evaluate("img => img.naturalWidth") > 100
    assert main_area(page).get_by_text(f"{expected} faces").count() >= 1
    assert all(("male" in row or "female" in row) for row in rows)
    for fmt in ("PNG", "JPEG"):
        main_area(page).get_by_role("button", name=f"Download annotated {fmt}").wait_for()
    screenshot(page, "browser_upload_group.png")


def test_upload_not_an_image(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("This is not a picture, just text saved with a .jpg name.\n")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(fake))
    main_area(page).get_by_text("notes.jpg: not an image file").wait_for()
    screenshot(page, "browser_upload_error.png")


def test_upload_too_large_is_refused(page, tmp_path):
    """The uploader refuses files over the limit before they are sent (Streamlit's own message)."""
    from agegender.app import MAX_UPLOAD_BYTES, MAX_UPLOAD_MB

    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * MAX_UPLOAD_BYTES)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(big))
    chip = page.locator('[data-testid="stFileUploader"] [data-testid="stFileChip"]')
    chip.get_by_role("alert").filter(has_text=f"File must be {MAX_UPLOAD_MB:.1f}MB or smaller").wait_for(
        state="attached")
    assert chip.get_attribute("aria-invalid") == "true" and "huge.jpg" in chip.inner_text()
    assert main_area(page).locator('[data-testid="stTable"]').count() == 0
    screenshot(page, "browser_upload_too_large.png")


def test_webcam_snapshot(page):
    page.get_by_text("Webcam snapshot").click()
    button = page.get_by_role("button", name="Take Photo")
    button.wait_for()
    main_area(page).locator("video").first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)")
    button.click()
    rows = wait_for_rows(page, 1)
    assert "male" in rows[0] or "female" in rows[0]
    wait_for_annotated_image(page)
    for fmt in ("PNG", "JPEG"):
        main_area(page).get_by_role("button", name=f"Download annotated {fmt}").wait_for()
    screenshot(page, "browser_snapshot.png")


def test_live_webrtc_over_loopback(page):
    page.get_by_text("Live webcam").click()
    frame = page.frame_locator('iframe[title*="webrtc"]').first
    frame.get_by_role("button", name="START").click()
    # the server's annotated stream comes back into the component's <video>
    frame.locator("video").first.wait_for()
    page.wait_for_timeout(1000)
    playing = frame.locator("video").first.evaluate(
        """v => new Promise(resolve => {
               const t0 = v.currentTime, start = Date.now();
               const check = () => (v.videoWidth > 0 && v.currentTime > t0 + 0.5) ? resolve(true)
                   : Date.now() - start > 60000 ? resolve(false) : setTimeout(check, 250);
               check();
           })""")
    assert playing, "the returned video did not play"
    rows = wait_for_rows(page, 1, timeout_ms=120_000)
    assert "male" in rows[0] or "female" in rows[0]
    screenshot(page, "browser_live.png")
    frame.get_by_role("button", name="STOP").click()
