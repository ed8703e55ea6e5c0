"""The `pylenet serve` page in headless Chromium (Selenium): draw with mouse and touch, see the prediction and maps."""
import base64
import math
import shutil

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
pytest.importorskip("PIL")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install '.[serve-test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from pylenet.serve import Predictor  # noqa: E402
from serve_util import Client, ServerThread, make_checkpoint  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(f"needs Chromium and chromedriver on PATH (chromium: {CHROMIUM}, chromedriver: "
                f"{CHROMEDRIVER}); on Debian: apt-get install chromium chromium-driver",
                allow_module_level=True)

WAIT_S = 20
STAGE_MAPS = {"C1": 6, "S2": 6, "C3": 16, "S4": 16}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("browser_model"))


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1180,800", "--force-device-scale-factor=1", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager must not go looking on the network.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, what, condition):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
        lambda d: condition(d), message=f"timed out after {WAIT_S} s waiting for {what}")


def settled_prediction(driver) -> bool:
    body = driver.find_element(By.TAG_NAME, "body")
    return body.get_attribute("data-state") == "predicted" and body.get_attribute("data-busy") == "0"


def mouse_stroke(driver, pad, points, *, release=True):
    """Press at the first point and drag through the others (offsets from the pad's centre); release unless told not to."""
    actions = ActionChains(driver, duration=20)
    actions.move_to_element_with_offset(pad, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for k in range(1, 5):  # several moves per segment, as a hand would make
            actions.move_to_element_with_offset(pad, round(x0 + (x1 - x0) * k / 4), round(y0 + (y1 - y0) * k / 4))
    if release:
        actions.release()
    actions.perform()


def touch_stroke(driver, pad, points):
    """The same with a finger: touch pointer events."""
    builder = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"), duration=20)
    finger = builder.pointer_action
    finger.move_to(pad, *points[0]).pointer_down()
    for x, y in points[1:]:
        finger.move_to(pad, x, y)
    finger.pointer_up()
    builder.perform()


def shown(driver) -> tuple[int, list[float]]:
    label = driver.find_element(By.ID, "label").text
    probs = [float(b.get_attribute("data-p")) for b in driver.find_elements(By.CSS_SELECTOR, ".bar")]
    return int(label), probs


def maps_drawn(driver) -> dict:
    """Per stage: how many map canvases and how many of them hold more than one gray level."""
    return driver.execute_script("""
        const out = {};
        for (const grid of document.querySelectorAll('.stage[data-stage] .grid')) {
          const maps = [...grid.querySelectorAll('canvas')];
          const varied = maps.filter((c) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 4; i < d.length; i += 4) if (d[i] !== d[0]) return true;
            return false;
          }).length;
          out[grid.parentElement.dataset.stage] = [maps.length, varied];
        }
        return out;""")


def test_draw_with_mouse_and_touch_see_prediction_and_maps_then_server_gone(
        browser, checkpoint, tmp_path):
    path, trained = checkpoint
    server = ServerThread(Predictor.load(path)).__enter__()
    try:
        browser.get(server.url)
        wait_for(browser, "the model description", lambda d: "61,706 parameters" in
                 d.find_element(By.ID, "model-info").text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#filters canvas")) == 6
        pad = browser.find_element(By.ID, "pad")
        assert (pad.size["width"], pad.size["height"]) == (284, 284)   # 280 + 2px border each side
        assert browser.find_element(By.ID, "label").text == "–"

        # A 7 with the mouse: the top bar, then the long diagonal. The prediction comes while
        # the button is still down: the page updates during the stroke, not after it.
        mouse_stroke(browser, pad, [(-75, -85), (75, -85), (5, 95)], release=False)
        wait_for(browser, "a prediction while drawing", settled_prediction)
        ActionChains(browser).release().perform()
        wait_for(browser, "a prediction", settled_prediction)
        assert pad.get_attribute("data-pointer") == "mouse"
        label, probs = shown(browser)
        assert max(probs) == probs[label] and abs(sum(probs) - 1) < 1e-5
        drawn = maps_drawn(browser)
        assert {s: n for s, (n, _) in drawn.items()} == STAGE_MAPS
        assert all(varied >= 1 for _, varied in drawn.values()), drawn
        # The page shows exactly what the API answers for the pixels on the pad.
        png = base64.b64decode(browser.execute_script(
            "return document.getElementById('pad').toDataURL('image/png').split(',')[1];"))
        client = Client(server.url)
        status, _, answer = client.call("POST", "/api/predict", png, "image/png")
        assert status == 200 and (answer["label"], answer["probabilities"]) == (label, probs)
        if trained:
            assert label == 7, probs
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, [e["message"] for e in errors]

        browser.find_element(By.ID, "clear").click()
        wait_for(browser, "a cleared page", lambda d: d.find_element(By.ID, "label").text == "–")
        assert maps_drawn(browser) == {s: [0, 0] for s in STAGE_MAPS}

        # A 1 with a finger.
        touch_stroke(browser, pad, [(0, -100), (0, -40), (0, 20), (0, 100)])
        wait_for(browser, "a prediction from touch", settled_prediction)
        assert pad.get_attribute("data-pointer") == "touch"
        label, probs = shown(browser)
        status, _, answer = client.call("POST", "/api/predict", base64.b64decode(browser.execute_script(
            "return document.getElementById('pad').toDataURL('image/png').split(',')[1];")), "image/png")
        assert (answer["label"], answer["probabilities"]) == (label, probs)
        if trained:
            assert label == 1, probs
        client.close()
    finally:
        server.stop()

    # The server is gone: the next stroke says so instead of failing silently.
    mouse_stroke(browser, pad, [(-60, 60), (60, 60)])
    status = browser.find_element(By.ID, "status")
    wait_for(browser, "the unreachable banner", lambda d: status.is_displayed())
    assert "unreachable" in status.text and "pylenet serve" in status.text
    browser.save_screenshot(str(tmp_path / "unreachable.png"))


# The heat map's colours, as app.js computes them (DIM, RAISE, LOWER there).
DIM, RAISE, LOWER = 0.4, (230, 40, 30), (30, 90, 230)


def expected_heat(answer) -> list[int]:
    """The RGBA bytes app.js draws for an /api/saliency answer: the input dimmed, blended
    towards red or blue by |saliency| / max |saliency| (the same float64 arithmetic)."""
    sal, image = answer["saliency"], answer["input"]
    scale = 1 / sal["max_abs"] if sal["max_abs"] > 0 else 0
    out = []
    for y in range(28):
        for x in range(28):
            s = sal["values"][y][x]
            a = min(1, abs(s) * scale)
            to = RAISE if s > 0 else LOWER
            base = DIM * image[y][x]
            out += [math.floor(base * (1 - a) + to[k] * a + 0.5) for k in range(3)] + [255]
    return out


def heat_shown(driver) -> tuple[str, list[int]]:
    return driver.execute_script("""
        const c = document.getElementById('heat');
        return [c.dataset.target, Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)];""")


def test_heat_map_is_the_apis_saliency_for_the_predicted_and_a_picked_class(browser, checkpoint):
    path, _ = checkpoint
    with ServerThread(Predictor.load(path)) as server:
        browser.get(server.url)
        wait_for(browser, "the model description", lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
        pad = browser.find_element(By.ID, "pad")
        mouse_stroke(browser, pad, [(-75, -85), (75, -85), (5, 95)])
        wait_for(browser, "a prediction", settled_prediction)
        label, _ = shown(browser)
        png = base64.b64decode(browser.execute_script(
            "return document.getElementById('pad').toDataURL('image/png').split(',')[1];"))
        client = Client(server.url)
        try:
            target, pixels = heat_shown(browser)
            status, _, answer = client.call("POST", "/api/saliency", png, "image/png")
            assert status == 200 and answer["saliency"]["target"] == label == int(target)
            assert pixels == expected_heat(answer)
            assert len(set(map(tuple, zip(pixels[0::4], pixels[1::4], pixels[2::4])))) > 20  # a map, not a flat fill

            # Another class from the menu: the map follows, and is that class's.
            other = (label + 3) % 10
            Select(browser.find_element(By.ID, "target")).select_by_value(str(other))
            wait_for(browser, f"the heat map of class {other}",
                     lambda d: heat_shown(d)[0] == str(other) and settled_prediction(d))
            status, _, answer = client.call("POST", f"/api/saliency?target={other}", png, "image/png")
            assert status == 200 and answer["saliency"]["target"] == other
            shown_other = heat_shown(browser)[1]
            assert shown_other == expected_heat(answer) and shown_other != pixels
            assert f"score of {other}" in browser.find_element(By.ID, "heat-info").text

            # A probability bar picks its class too.
            browser.find_element(By.CSS_SELECTOR, f'.bar[data-digit="{label}"]').click()
            wait_for(browser, "the heat map of the bar's class",
                     lambda d: heat_shown(d)[0] == str(label) and settled_prediction(d))
            assert heat_shown(browser)[1] == pixels
        finally:
            client.close()
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, [e["message"] for e in errors]
