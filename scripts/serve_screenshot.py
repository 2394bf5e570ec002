"""The README's picture of `unitune serve`: a real server and browser, the demo's photo tuned and
its checkpoints x t0 grid rendered, the Explore tab captured.

    python scripts/serve_screenshot.py [--steps 32] [--out docs/serve.png]

Needs chromium + chromedriver (apt); writes a ~900 px wide PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    a = ap.parse_args()
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from test_serve import Srv
    from unitune.demo import SCENE
    from unitune.world.render import render, to_pil

    tmp = Path(tempfile.mkdtemp())
    photo = tmp / "scene.png"
    to_pil(render([SCENE], 64)[0]).save(photo)
    srv = Srv(tmp / "data")
    opts = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
    ):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium")
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        wait = WebDriverWait(d, 600, poll_frequency=0.5)
        css = lambda sel: d.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        d.get(srv.url)
        wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))
        css("#photo input[type=file]").send_keys(str(photo))
        wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#photo-preview img"))
        css("#caption textarea").send_keys("a red circle and a blue square")
        steps = css("#steps input")
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys(str(a.steps))
        css("#tune-btn").click()
        wait.until(lambda _: "done" in css("#tune-status").text)
        next(
            b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Explore" in b.text
        ).click()
        time.sleep(1)
        css("#prompt textarea").send_keys("a green circle and a blue square")
        t0s = css("#t0s textarea")
        t0s.send_keys(Keys.CONTROL, "a")
        t0s.send_keys("0.7,0.8,0.9,1")
        css("#grid-btn").click()
        wait.until(lambda _: "done" in css("#grid-status").text)
        time.sleep(3)
        d.save_screenshot(str(tmp / "shot.png"))
    finally:
        d.quit()
        srv.kill()
    img = Image.open(tmp / "shot.png").convert("RGB")
    img = img.resize((900, round(img.height * 900 / img.width)), Image.LANCZOS)
    img.save(a.out, optimize=True)
    print(a.out, Path(a.out).stat().st_size // 1024, "kB")


if __name__ == "__main__":
    main()
