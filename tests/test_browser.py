"""The app in a real browser: ``streamlit run`` on 127.0.0.1 driven by Debian's Chromium via Playwright.

Needs ``apt-get install chromium`` and ``pip install playwright`` (never
``playwright install``: it downloads its own browsers). Without them these tests
skip, except in CI (``CI=true``), where a missing browser fails them.

The webcam is Chromium's fake capture device fed with a .y4m video made at test
time from a face photo. Screenshots go to ``test-artifacts/``. The server serves the default model with the
gender calibration of :data:`conftest.GENDER_CONFIDENCE` in a copy of its card, so "uncertain" does not depend on
the card of whichever model is promoted.

The README's screenshots ``figures/app_desktop.png`` and ``figures/app_phone.png`` are written by::

    AGEGENDER_APP_FIGURES=1 .venv/bin/pytest tests/test_browser.py -k "example_click or phone"
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

from conftest import calibrated_model_copy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "src" / "agegender" / "app.py"
ASSETS = Path(__file__).resolve().parent / "assets"
WILD = Path(os.environ.get("WILD_SAMPLES_DIR", REPO.parent / "shared" / "datasets" / "wild_samples"))
ARTIFACTS = REPO / "test-artifacts"
FIGURES = REPO / "figures"
SAMPLE = REPO / "data" / "sample"
#: Six UTKFace crops of the test split (ages 3 to 70) for a row of six faces.
SIX_FACES = ["8_1_0_20170109204144358.jpg.chip.jpg", "3_0_0_20170110213411465.jpg.chip.jpg",
             "31_0_1_20170114032310376.jpg.chip.jpg", "28_1_0_20170108225857948.jpg.chip.jpg",
             "70_0_0_20170104213700973.jpg.chip.jpg", "62_1_2_20170116191832323.jpg.chip.jpg"]
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
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


def six_in_a_row(target: Path, side: int = 130, gap: int = 4) -> Path:
    """A photo of six faces side by side, nearly touching, as in a team photo."""
    width = 6 * side + 5 * gap + 2 * 40
    canvas = Image.new("RGB", (width, side + 260), (205, 200, 190))
    for i, name in enumerate(SIX_FACES):
        face = Image.open(SAMPLE / name).convert("RGB").resize((side, side), Image.LANCZOS)
        canvas.paste(face, (40 + i * (side + gap), 150))
    canvas.save(target, quality=92)
    return target


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
def served_model(app_model, tmp_path_factory) -> Path:
    """The model in a folder of its own, its card with a gender calibration (conftest.GENDER_CONFIDENCE)."""
    return calibrated_model_copy(app_model, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    """``streamlit run src/agegender/app.py`` on a free port of 127.0.0.1 (from the repository's root, so that
    .streamlit/config.toml applies); yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, AGEGENDER_MODEL=str(served_model), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
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


def open_page(browser, server, viewport: dict, scale: float = 1):
    """A new browser context and page on the app, once its model is loaded (the uploader shows)."""
    context = browser.new_context(viewport=viewport, device_scale_factor=scale)
    context.grant_permissions(["camera"], origin=server)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    messages: list[str] = []
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    page.goto(server)
    page.get_by_role("heading", name="Age and gender estimation").wait_for()
    page.locator('[data-testid="stFileUploader"]').wait_for()  # shown once the model is loaded
    return context, page, messages


@pytest.fixture
def page(browser, server, request):
    context, page, messages = open_page(browser, server, DESKTOP)
    try:
        yield page
    finally:
        screenshot(page, f"last_{request.node.name}.png")  # the page as the test left it, pass or fail
        print("--- browser console ---\n" + "\n".join(messages[-40:]))
        context.close()


@pytest.fixture
def phone(browser, server, request):
    context, page, messages = open_page(browser, server, PHONE, scale=2)
    try:
        yield page
    finally:
        screenshot(page, f"last_{request.node.name}.png")
        print("--- browser console ---\n" + "\n".join(messages[-40:]))
        context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def figure(page, name: str) -> None:
    """Save a screenshot for the README when AGEGENDER_APP_FIGURES is set (see the module's docstring)."""
    if os.environ.get("AGEGENDER_APP_FIGURES"):
        FIGURES.mkdir(exist_ok=True)
        page.screenshot(path=str(FIGURES / name))


def main_area(page):
    return page.locator('[data-testid="stMain"]')


RESULT_ROWS = ".ag-table tbody tr"  # the persons table of a photo
LIVE_ROWS = '[data-testid="stTable"] tbody tr'  # the live mode's table


def wait_for_rows(page, count: int, timeout_ms: int = TIMEOUT_MS, selector: str = RESULT_ROWS) -> list[str]:
    """The rows of the first persons table in the main area, once it has ``count`` of them."""
    rows = main_area(page).locator(selector)
    deadline = time.monotonic() + timeout_ms / 1000
    while rows.count() != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} rows, have {rows.count()}: {rows.all_inner_texts()}")
        page.wait_for_timeout(250)
    return rows.all_inner_texts()


def wait_for_annotated_image(page):
    """The (last) photo with numbered faces in the main area, once loaded, scrolled into view."""
    from playwright.sync_api import Error as PlaywrightError

    image = main_area(page).locator(".ag-figure img.ag-photo").last
    for attempt in range(3):  # a Streamlit rerun may replace the element between finding and scrolling to it
        image.wait_for()
        try:
            image.scroll_into_view_if_needed()
            break
        except PlaywrightError:
            if attempt == 2:
                raise
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return image


def upload(page, *paths) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(p) for p in paths])


def rects(locator) -> list[dict]:
    return locator.evaluate_all("els => els.map(e => { const r = e.getBoundingClientRect();"
                                " return {x: r.left, y: r.top, w: r.width, h: r.height}; })")


def intersect(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def check_markers(page, count: int) -> list[dict]:
    """The markers: ``count`` of them, numbered 1..count, none overlapping another, their words the table's."""
    markers = main_area(page).locator(".ag-marker")
    assert markers.count() == count
    assert markers.all_inner_texts() == [str(i) for i in range(1, count + 1)]
    boxes = rects(markers)
    clashes = [(i + 1, j + 1) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1) if intersect(a, b)]
    assert not clashes, f"markers overlap: {clashes} {boxes}"
    rows = main_area(page).locator(RESULT_ROWS)
    for i in range(count):  # "3: 29 (24-35), female, 87 %" on the image; 29 in the table's age column
        title = markers.nth(i).get_attribute("title")
        cells = rows.nth(i).locator("td").all_inner_texts()
        number, rest = title.split(": ", 1)
        assert number == cells[0].strip() and rest.split(" ")[0] == cells[2].strip(), (title, cells)
    return boxes


# -- tests ----------------------------------------------------------------------------------------
def test_upload_group_photo(page):
    photo, expected = group_photo()
    upload(page, photo)
    rows = wait_for_rows(page, expected)
    image = wait_for_annotated_image(page)
    assert image.evaluate("img => img.naturalWidth") > 100
    assert main_area(page).get_by_text(f"{expected} faces").count() >= 1
    assert all(("male" in row or "female" in row or "uncertain" in row) for row in rows)
    check_markers(page, expected)
    for fmt in ("PNG", "JPEG"):
        main_area(page).get_by_role("button", name=f"Download annotated {fmt}").wait_for()
    screenshot(page, "browser_upload_group.png")


def test_upload_not_an_image(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("This is not a picture, just text saved with a .jpg name.\n")
    upload(page, fake)
    main_area(page).get_by_text("notes.jpg: not an image file").wait_for()
    screenshot(page, "browser_upload_error.png")


def test_upload_too_large_is_refused_with_a_message(page, tmp_path):
    """The uploader refuses files over the limit before they are sent (Streamlit marks them with a red "!" only);
    the app says so in words under the uploader, and the message goes when the file is removed."""
    from agegender.app import MAX_UPLOAD_BYTES, MAX_UPLOAD_MB

    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * MAX_UPLOAD_BYTES)
    upload(page, big)
    chip = page.locator('[data-testid="stFileUploader"] [data-testid="stFileChip"]')
    chip.get_by_role("alert").filter(has_text=f"File must be {MAX_UPLOAD_MB:.1f}MB or smaller").wait_for(
        state="attached")
    assert chip.get_attribute("aria-invalid") == "true" and "huge.jpg" in chip.inner_text()
    message = main_area(page).locator("#ag-upload-problems .ag-alert")
    message.wait_for(state="visible")
    text = message.inner_text()
    assert "huge.jpg is too large" in text and f"up to {MAX_UPLOAD_MB} MB" in text and "smaller copy" in text
    assert main_area(page).locator(RESULT_ROWS).count() == 0
    screenshot(page, "browser_upload_too_large.png")
    page.get_by_role("button", name="Remove huge.jpg").click()
    message.wait_for(state="detached")


def test_example_click(page):
    main_area(page).get_by_role("button", name="Six faces").click()
    wait_for_rows(page, 6)
    wait_for_annotated_image(page)
    check_markers(page, 6)
    heading = main_area(page).get_by_role("heading", name="six_faces.jpg")
    try:  # the page scrolls the result into view
        page.wait_for_function("([e, h]) => { const t = e.getBoundingClientRect().top; return t >= 0 && t < h / 2; }",
                               arg=[heading.element_handle(), DESKTOP["height"]], timeout=10_000)
    except Exception:
        top = heading.evaluate("e => e.getBoundingClientRect().top")
        raise AssertionError(f"the result is not in view (its top at {top} px)") from None
    screenshot(page, "browser_example.png")
    if os.environ.get("AGEGENDER_APP_FIGURES"):  # the whole page, intro and result, for the README
        page.set_viewport_size({"width": DESKTOP["width"], "height": 1500})
        page.wait_for_timeout(1500)
        page.evaluate("() => { window.scrollTo(0, 0); document.querySelectorAll('*').forEach("
                      "e => { if (e.scrollTop) e.scrollTop = 0; }); }")
        page.wait_for_timeout(500)
        figure(page, "app_desktop.png")


def test_six_faces_in_a_row_have_separate_markers(page, tmp_path):
    upload(page, six_in_a_row(tmp_path / "team.jpg"))
    wait_for_rows(page, 6)
    wait_for_annotated_image(page)
    check_markers(page, 6)
    screenshot(page, "browser_six_in_a_row.png")


def test_phone_width_is_readable(phone, tmp_path):
    """390 px wide: nothing wider than the screen, markers apart and legible, the table's text a readable size."""
    main_area(phone).get_by_role("button", name="Six faces").click()
    main_area(phone).get_by_role("heading", name="six_faces.jpg").wait_for()
    wait_for_rows(phone, 6)
    wait_for_annotated_image(phone)
    phone.wait_for_timeout(1000)  # the result scrolls into view
    figure(phone, "app_phone.png")
    upload(phone, six_in_a_row(tmp_path / "team.jpg"))  # replaces the example
    main_area(phone).get_by_role("heading", name="team.jpg").wait_for()
    wait_for_rows(phone, 6)
    wait_for_annotated_image(phone)
    boxes = check_markers(phone, 6)
    assert all(b["w"] >= 20 and 0 <= b["x"] and b["x"] + b["w"] <= PHONE["width"] for b in boxes), boxes
    sizes = main_area(phone).locator(".ag-marker").evaluate_all(
        "els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
    assert min(sizes) >= 11, sizes
    table_size = main_area(phone).locator(RESULT_ROWS).first.locator("td").nth(2).evaluate(
        "e => parseFloat(getComputedStyle(e).fontSize)")
    assert table_size >= 13
    widths = phone.evaluate("() => [document.documentElement.scrollWidth, document.querySelector("
                            "'[data-testid=\"stMain\"]').scrollWidth, window.innerWidth]")
    assert max(widths[:2]) <= widths[2], f"horizontal overflow: {widths}"
    screenshot(phone, "browser_phone.png")


def test_heic_upload(page, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed: HEIC photos get a message")
    pillow_heif.register_heif_opener()
    photo = tmp_path / "IMG_0001.HEIC"
    Image.open(ASSETS / "face.jpg").convert("RGB").save(photo, format="HEIF", quality=85)
    assert photo.read_bytes()[4:12] == b"ftypheic"
    upload(page, photo)
    rows = wait_for_rows(page, 1)
    assert main_area(page).get_by_role("heading", name="IMG_0001.HEIC").count() == 1
    assert any(word in rows[0] for word in ("male", "female", "uncertain"))


def test_uncertain_gender_for_a_child(page):
    """The served card's calibration (conftest.GENDER_CONFIDENCE) leaves a 3-year-old's gender uncertain."""
    main_area(page).get_by_role("button", name="A child").click()
    (row,) = wait_for_rows(page, 1)
    assert "uncertain" in row and "leans" in row
    marker = main_area(page).locator(".ag-marker").first
    assert "uncertain" in marker.get_attribute("title")
    assert "calibrated" in main_area(page).inner_text()


def test_webcam_snapshot(page):
    page.get_by_text("Webcam snapshot").click()
    button = page.get_by_role("button", name="Take Photo")
    button.wait_for()
    main_area(page).locator("video").first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)")
    button.click()
    rows = wait_for_rows(page, 1)
    assert "male" in rows[0] or "female" in rows[0] or "uncertain" in rows[0]
    for fmt in ("PNG", "JPEG"):
        main_area(page).get_by_role("button", name=f"Download annotated {fmt}").wait_for()
    page.wait_for_timeout(1500)  # the result scrolls into view if it is not
    table = main_area(page).locator(".ag-table").first
    top, bottom = table.evaluate("e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; }")
    assert 0 <= top and bottom <= DESKTOP["height"], f"the result is out of view: {top}..{bottom}"
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
    rows = wait_for_rows(page, 1, timeout_ms=120_000, selector=LIVE_ROWS)
    assert "male" in rows[0] or "female" in rows[0] or "uncertain" in rows[0]
    screenshot(page, "browser_live.png")
    frame.get_by_role("button", name="STOP").click()
