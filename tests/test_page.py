"""The listening page in a real browser: Debian's Chromium driven by Playwright, against the
service on 127.0.0.1 with a toy backbone and a token (tests/service_setup.py, shared with
test_serve.py, which also checks what the page is served with).

The backbone here is the toy AudioLDM 2 (two conditioning sequences, both fitted and
interpolated), where test_serve.py runs the toy TANGO: the page's edits go through the service's
editor replica on Ray Serve, and its upload through a fit and a Tune search on Ray, on it.

One service and one browser for the module. The page's tab is shared by the tests in file order:
an upload is started early so that its fit and search run while the other tests do. Set
NRT_PAGE_SCREENSHOTS to a folder to have the page's screenshots written there.
"""

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.conftest import HANG_SECONDS, write_tone_clip

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytest.importorskip("ray")
pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser tests need the playwright package: pip install -e '.[page]'")
if not CHROMIUM.exists():
    pytest.skip(f"the browser tests need Debian's Chromium at {CHROMIUM}: run .ci/browser", allow_module_level=True)
expect = sync_api.expect
# assertions wait for the page, and the page waits for the service: as long as a wait on work may last
expect.set_options(timeout=HANG_SECONDS * 1000)

from nrt.storage import Storage, read_registry_entry, registry_rel, write_registry_entry  # noqa: E402
from tests.service_setup import RATE, TOKEN, fit_tiny_bundle, publish, running_service  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "tiny-audioldm2"

SCREENSHOTS = os.environ.get("NRT_PAGE_SCREENSHOTS")
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 375, "height": 740}

# In the page: the edit's and the input's bytes, fetched from their <audio> elements' object URLs,
# and decoded with the Web Audio API.
READ_AUDIO = """async () => {
  const bytesOf = async (id) => new Uint8Array(await (await fetch(document.getElementById(id).src)).arrayBuffer());
  const decode = (bytes) => new OfflineAudioContext(1, 1, 44100).decodeAudioData(bytes.slice().buffer);
  const edit = await bytesOf("edit-audio");
  const input = await bytesOf("input-audio");
  const tag = (at) => String.fromCharCode(...edit.slice(at, at + 4));
  const [decodedEdit, decodedInput] = await Promise.all([decode(edit), decode(input)]);
  return {riff: tag(0), wave: tag(8), rate: new DataView(edit.buffer).getUint32(24, true),
          edit: decodedEdit.duration, input: decodedInput.duration, channels: decodedEdit.numberOfChannels};
}"""

# In the page: how many pixels of a canvas are painted.
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) painted += pixels[i] === 255;
  return painted / (canvas.width * canvas.height);
}"""

# In the page: the controls a screen reader could not name.
UNLABELLED = """() => [...document.querySelectorAll("input, select, button, audio, canvas, a[href], progress")]
  .filter((node) => node.offsetParent !== null)
  .filter((node) => !(node.labels && node.labels.length) && !node.getAttribute("aria-label")
                    && !node.getAttribute("aria-labelledby") && !node.textContent.trim())
  .map((node) => node.outerHTML.slice(0, 80))"""


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    fitted = fit_tiny_bundle(tmp_path_factory.mktemp("fitted"), MODEL)
    storage = Storage(tmp_path_factory.mktemp("page") / "root")
    for clip_id, prompt in (("beep", "a beep with a dog barking"), ("gone", "a beep in a cathedral")):
        write_registry_entry(storage, publish(storage, clip_id, fitted, prompt, model=MODEL))
    return storage


@pytest.fixture(scope="module")
def service(storage):
    with running_service({
        "storage": storage.root, "model": MODEL, "api_token": TOKEN, "max_upload_mb": "0.5", "job_preset": "smoke",
        "job_trials": "1",
        "job_fit_cpus": "0.5", "job_trial_cpus": "0.5", "editor_cpus": "0.5",
    }) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=BROWSER_ARGS, viewport=DESKTOP)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def js_errors():
    return []


def open_page(browser, url: str, js_errors: list):
    page = browser.new_page()  # a new tab: an empty sessionStorage, so no token yet
    page.on("pageerror", lambda error: js_errors.append(str(error)))
    page.goto(f"{url}/")
    return page


def sign_in(page) -> None:
    page.get_by_label("Token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#clip-list .clip")).not_to_have_count(0)


@pytest.fixture(scope="module")
def page(browser, service, js_errors):
    page = open_page(browser, service, js_errors)
    sign_in(page)
    yield page
    page.close()


def choose(page, clip_id: str) -> None:
    """Choose the clip in the list and wait for its input (a new object URL, also for the same clip)."""
    before = page.locator("#input-audio").get_attribute("src") or ""
    page.locator(f'#clip-list button[data-clip="{clip_id}"]').click()
    page.wait_for_function("(before) => { const src = document.getElementById('input-audio').src; "
                           "return src.startsWith('blob:') && src !== before; }", arg=before)
    expect(page.locator("#clip-h")).to_have_text(f"Clip {clip_id}")


def press_edit(page, eta: str | None = None) -> str:
    """Press Edit (after setting η) and return the new edit's object URL."""
    before = page.locator("#edit-audio").get_attribute("src") or ""
    if eta is not None:
        page.get_by_label("η value").fill(eta)
    page.get_by_role("button", name="Edit", exact=True).click()
    page.wait_for_function("(before) => { const src = document.getElementById('edit-audio').src; "
                           "return src.startsWith('blob:') && src !== before; }", arg=before, timeout=HANG_SECONDS * 1000)
    return page.locator("#edit-audio").get_attribute("src")


# -- the token ------------------------------------------------------------------------------------------
def test_the_page_asks_for_the_token_and_keeps_it_in_the_tab_only(browser, service, js_errors):
    page = open_page(browser, service, js_errors)
    token = page.get_by_label("Token", exact=True)
    expect(token).to_be_visible()
    expect(token).to_have_attribute("type", "password")
    expect(token).to_be_focused()
    expect(page.locator("#clip-list .clip")).to_have_count(0)
    token.fill("not-the-token")
    token.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("the bearer token is not valid")
    expect(token).to_be_visible()
    sign_in(page)
    expect(page.locator("#clip-list .clip")).to_have_count(2)
    expect(page.get_by_role("alert")).to_be_hidden()
    assert page.evaluate("() => [sessionStorage.getItem('nrt-token'), localStorage.length]") == [TOKEN, 0]
    page.reload()  # the same tab keeps it
    expect(page.locator("#clip-list .clip")).to_have_count(2)
    expect(token).to_be_hidden()
    other = open_page(browser, service, js_errors)  # another tab asks again
    expect(other.get_by_label("Token", exact=True)).to_be_visible()
    other.close()
    page.get_by_role("button", name="Forget token").click()
    expect(token).to_be_visible()
    expect(page.locator("#clip-list .clip")).to_have_count(0)
    assert page.evaluate("() => sessionStorage.length") == 0
    page.close()
    assert not js_errors


# -- an upload, started early: its job runs while the other tests do ---------------------------------
def test_an_upload_from_the_page_starts_a_job_it_follows(page, tmp_path):
    form = page.locator("#upload-form")
    (tmp_path / "notes.txt").write_text("not audio at all " * 50)
    form.get_by_label("Recording").set_input_files(tmp_path / "notes.txt")
    form.get_by_label("Target prompt").fill("a beep and a cat")
    form.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("bad_audio")  # the API's answer, as it gave it

    wav = write_tone_clip(tmp_path / "cat beep.wav")
    form.get_by_label("Recording").set_input_files(wav)
    form.get_by_label("Target prompt").fill("a beep and a cat")
    form.get_by_label("Clip id").fill("uploaded")
    form.get_by_role("button", name="Upload").click()
    job = page.locator("#jobs li").first
    expect(job).to_contain_text(re.compile(r"Clip uploaded: (queued|fitting|searching|done)"))
    expect(job.locator("progress")).to_have_count(1)
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(form.get_by_label("Target prompt")).to_have_value("")  # the form is ready for the next one


# -- edits -----------------------------------------------------------------------------------------------
def test_an_edit_plays_as_a_wav_of_the_inputs_length(page, js_errors):
    choose(page, "beep")
    expect(page.get_by_label("η value")).to_have_value("0.50")  # the clip's best
    expect(page.locator("#steps")).to_have_value("3")
    press_edit(page, eta="0.3")

    audio = page.evaluate(READ_AUDIO)
    assert (audio["riff"], audio["wave"], audio["rate"], audio["channels"]) == ("RIFF", "WAVE", RATE, 2)
    assert audio["input"] == pytest.approx(1.0, abs=1e-3)
    assert abs(audio["edit"] - audio["input"]) < 1e-3, audio

    result = page.locator("#result")
    expect(result).to_contain_text("η 0.30 · 3 steps · guidance 2 · ddpm · seed 0")
    for name in ("Text", "Audio", "Sum"):
        expect(result).to_contain_text(re.compile(rf"{name} CLAP\s*-?\d\.\d{{3}}"))
    download = page.locator("#download")
    expect(download).to_have_attribute("download", "beep-eta0.30-seed0.wav")
    expect(download).to_have_attribute("href", re.compile(r"^blob:"))
    expect(page.locator("#edit-axis")).to_contain_text("1.00 s · 22050 Hz stereo")
    for canvas in ("input-spec", "edit-spec"):  # painted once the audio is decoded
        page.wait_for_function(f"(id) => ({PAINTED})(id) > 0.99", arg=canvas)

    page.get_by_role("button", name="Play A, then B").click()  # the input, then the edit
    page.wait_for_function("() => { const [a, b] = document.querySelectorAll('audio'); "
                           "return a.ended && !b.paused && b.currentTime > 0; }", timeout=15_000)
    page.wait_for_function("() => document.getElementById('edit-audio').ended", timeout=15_000)
    page.get_by_label("Loop").check()
    page.get_by_role("radio", name="A input").check()
    page.get_by_role("button", name="Play A", exact=True).click()
    page.wait_for_function("() => document.getElementById('input-audio').currentTime > 0.2")
    page.get_by_role("radio", name="A input").press("ArrowRight")  # A/B: B carries on from where A was
    page.wait_for_function("() => { const [a, b] = document.querySelectorAll('audio'); "
                           "return a.paused && !b.paused && b.currentTime > 0.2; }")
    page.get_by_role("button", name="Pause", exact=True).click()
    page.get_by_label("Loop").uncheck()
    assert not js_errors


def test_api_errors_show_in_the_alert_and_the_page_keeps_working(page, storage, js_errors):
    choose(page, "beep")
    alert = page.get_by_role("alert")
    page.get_by_label("Steps").fill("5000")
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(alert).to_contain_text("steps: Input should be less than or equal to 1000 (got 5000)")
    expect(alert).to_contain_text("422 invalid_request")
    page.get_by_role("button", name="Best settings").click()
    expect(page.get_by_label("Steps")).to_have_value("3")

    choose(page, "gone")
    expect(alert).to_be_hidden()
    storage.local_path(registry_rel("gone")).unlink()  # taken out of the registry behind the page's back
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(alert).to_contain_text("no clip 'gone' in the registry")
    expect(alert).to_contain_text("404 not_found")

    choose(page, "beep")  # the page still works: a good edit, and the alert is gone
    expect(alert).to_be_hidden()
    first = press_edit(page, eta="0.7")
    expect(page.locator("#result")).to_contain_text("η 0.70")
    assert page.evaluate(READ_AUDIO)["riff"] == "RIFF"
    second = press_edit(page, eta="0.2")
    assert second != first
    history = page.locator("#history li")
    expect(history).to_have_count(3)  # 0.3 (the earlier test), 0.7, 0.2; the newest in B
    expect(history.first).to_contain_text("η 0.20")
    history.nth(1).get_by_role("button", name="Put edit").click()
    expect(page.locator("#edit-audio")).to_have_attribute("src", first)
    expect(page.locator("#download")).to_have_attribute("download", "beep-eta0.70-seed0.wav")
    expect(page.get_by_label("η value")).to_have_value("0.70")  # its settings, to go on from
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator('#clip-list button[data-clip="gone"]')).to_have_count(0)
    assert not js_errors


def test_the_chosen_start_is_sent_and_the_one_used_is_shown(page, js_errors):
    choose(page, "beep")
    start, t_start = page.get_by_label("Start", exact=True), page.get_by_label("t_start", exact=True)
    expect(start).to_have_value("noise")  # the clip's best: its entry predates the start, so noise
    expect(t_start).to_be_disabled()  # the noise start has none
    start.select_option("inversion")
    expect(t_start).to_be_enabled()
    t_start.fill("0.5")
    with page.expect_request(lambda request: request.url.endswith("/v1/clips/beep/edits")) as sent:
        press_edit(page, eta="0.4")
    assert {k: sent.value.post_data_json.get(k) for k in ("start", "t_start", "eta")} == {
        "start": "inversion", "t_start": 0.5, "eta": 0.4}
    assert sent.value.response().headers["x-nrt-start"] == "inversion"
    expect(page.locator("#result")).to_contain_text("η 0.40 · 3 steps · guidance 2 · ddpm · seed 0 · "
                                                    "from inversion at t_start 0.50")
    expect(page.locator("#history li").first).to_contain_text("from inversion at t_start 0.50")

    page.get_by_role("button", name="Best settings").click()
    expect(start).to_have_value("noise")
    expect(t_start).to_be_disabled()
    with page.expect_request(lambda request: request.url.endswith("/v1/clips/beep/edits")) as sent:
        press_edit(page)
    assert sent.value.post_data_json["start"] == "noise" and "t_start" not in sent.value.post_data_json
    expect(page.locator("#result")).to_contain_text("seed 0 · from noise")
    page.locator("#history li").nth(1).get_by_role("button", name="Put edit").click()  # its settings, inversion too
    expect(start).to_have_value("inversion")
    expect(t_start).to_have_value("0.5")
    assert not js_errors


# -- keyboard, screen readers, phones ----------------------------------------------------------------
def test_the_page_works_by_keyboard_alone_and_names_its_controls(browser, service, js_errors):
    page = open_page(browser, service, js_errors)
    expect(page.get_by_label("Token", exact=True)).to_be_focused()
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#clip-list .clip")).not_to_have_count(0)

    def tab_to(selector: str) -> None:
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to('button[data-clip="beep"]')
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focus is not visible"
    page.keyboard.press("Enter")
    expect(page.locator("#clip-h")).to_be_focused()
    expect(page.locator("#input-audio")).to_have_attribute("src", re.compile(r"^blob:"))
    tab_to("#eta")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("η value")).to_have_value("0.52")
    tab_to("#edit-button")
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_contain_text("η 0.52", timeout=HANG_SECONDS * 1000)

    assert page.evaluate(UNLABELLED) == []
    assert page.locator("header").count() == 1 and page.locator("main").count() == 1
    expect(page.get_by_role("status")).to_contain_text("Edit")
    page.close()
    assert not js_errors


def test_the_page_fits_a_phone(page):
    for size, name in ((PHONE, "page-phone.png"), (DESKTOP, "page-desktop.png")):
        page.set_viewport_size(size)
        page.mouse.move(0, 0)
        page.wait_for_timeout(300)  # the spectrograms are redrawn for the new width
        assert page.evaluate("() => document.documentElement.scrollWidth") <= size["width"]
        for canvas in ("input-spec", "edit-spec"):
            box = page.locator(f"#{canvas}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (canvas, box)
        if SCREENSHOTS:
            screenshot(page, Path(SCREENSHOTS) / name)


def screenshot(page, path: Path) -> None:
    """The whole page as a PNG of 256 colours, small enough to keep in the docs."""
    from PIL import Image

    page.screenshot(path=str(path), full_page=True, animations="disabled")
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


# -- the upload, at its end ----------------------------------------------------------------------------
def test_the_uploaded_clip_comes_into_the_list_when_its_job_is_done(page, js_errors, storage):
    job = page.locator("#jobs li").first
    expect(job).to_contain_text(re.compile(r"Clip uploaded: (done|failed)"), timeout=HANG_SECONDS * 1000)
    expect(job).to_contain_text("Clip uploaded: done")
    expect(job.locator("progress")).to_have_attribute("value", "1")
    expect(page.locator('#clip-list button[data-clip="uploaded"]')).to_contain_text("a beep and a cat")
    job.get_by_role("button", name="Open uploaded").click()
    expect(page.locator("#clip-h")).to_have_text("Clip uploaded")
    entry = read_registry_entry(storage, "uploaded")  # fitted and searched on the service's model
    assert entry["model"] == MODEL and entry["trials"]["done"] >= 1
    assert storage.read_json(f"{entry['bundle']}/bundle.json")["backbone"]["kind"] == "audioldm2"
    assert not js_errors
