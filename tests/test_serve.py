"""`unitune serve` end to end: a real server process on loopback with the embedded model, driven
by a real browser (Debian's chromium + chromedriver through selenium) and by the HTTP API
(gradio_client): the whole Tune -> Explore -> Download path, a restart during a tune, the upload
limits, a full queue and concurrent clients."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unitune.app.jobs import JobQueue
from unitune.config import TuneConfig

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# the Refine tab's last four inputs as an SDEdit start without masks: start, inversion's
# negative prompt, automatic mask, its threshold
NOISE = ("noise", False, False, "diffedit", 0.5, "off")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Srv:
    """A `unitune serve` subprocess on a free loopback port."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data, self.port = data, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        argv = [
            sys.executable,
            "-m",
            "unitune.cli",
            "serve",
            "--data",
            str(data),
            "--port",
            str(self.port),
            "--device",
            "cpu",
            *extra,
        ]
        self.log = open(data.parent / f"serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        end = time.time() + 120
        while time.time() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, Path(self.log.name).read_text()
                time.sleep(0.5)
        raise TimeoutError("the server did not start")

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.log.close()


@pytest.fixture()
def srv(tmp_path):
    servers: list[Srv] = []

    def start(*extra: str, data: Path | None = None) -> Srv:
        s = Srv(data or tmp_path / "data", *extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.kill()


def _wait(client, job: str, timeout: float = 300) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        st = client.predict(job, api_name="/job")
        if st["state"] in ("done", "failed", "cancelled"):
            return st
        time.sleep(0.5)
    raise TimeoutError(f"job {job}")


def _submit_tune(
    client, photo: str, steps: int, caption: str = "a scene", preview: str = ""
) -> str:
    from gradio_client import handle_file

    job, _status = client.predict(
        handle_file(photo), caption, steps, "world", preview, api_name="/submit_tune"
    )
    return job


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium + chromedriver (apt)")
def test_browser_tune_grid_cell_download(srv, demo_photo, tmp_path):
    """Upload the demo image, tune 4 steps, render a 2-cell grid, open a cell, download its PNG:
    the download carries its `parameters` chunk; then an edit with the automatic mask shows its
    mask. A screenshot per step in tmp_path/shots."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    s = srv()
    shots, dl = tmp_path / "shots", tmp_path / "downloads"
    shots.mkdir()
    dl.mkdir()
    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(dl), "download.prompt_for_download": False}
    )
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        wait = lambda t=240: WebDriverWait(d, t, poll_frequency=0.5)  # noqa: E731
        css = lambda sel: d.find_element(By.CSS_SELECTOR, sel)  # noqa: E731

        def tab(name: str) -> None:
            next(
                b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if name in b.text
            ).click()
            time.sleep(0.5)

        def fill(sel: str, text: str) -> None:  # replace a field's text
            field = css(sel)
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(text)

        def status(sel: str) -> str:
            wait().until(lambda _: any(w in css(sel).text for w in ("done", "failed")))
            return css(sel).text

        d.get(s.url)
        wait().until(lambda _: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))
        d.save_screenshot(str(shots / "1-page.png"))
        css("#photo input[type=file]").send_keys(demo_photo)
        wait().until(lambda _: d.find_elements(By.CSS_SELECTOR, "#photo-preview img"))
        css("#caption textarea").send_keys("a red circle")
        fill("#steps input", "4")
        css("#preview-prompt textarea").send_keys("a green circle")
        css("#tune-btn").click()
        assert "done" in status("#tune-status")
        # the preview edit of the tune's checkpoint appears in the Tune tab (2 seeds)
        wait(60).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#previews img")) >= 2)
        d.save_screenshot(str(shots / "2-tuned.png"))
        tab("Explore")  # the tune just made is picked already
        wait(30).until(lambda _: "#1 a red circle" in css("#pick input").get_attribute("value"))
        css("#prompt textarea").send_keys("a green circle")
        fill("#t0s textarea", "0.9,1")
        css("#grid-btn").click()
        assert "done" in status("#grid-status")
        wait().until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#cells .thumbnail-item")) == 2)
        d.save_screenshot(str(shots / "3-grid.png"))
        d.find_elements(By.CSS_SELECTOR, "#cells .thumbnail-item")[0].click()
        tab("Download")
        wait(30).until(lambda _: '"t0": 0.9' in css("#chosen-params").text)
        d.save_screenshot(str(shots / "4-cell.png"))
        css("#download").click()
        css("#sidecar").click()
        wait(30).until(lambda _: glob.glob(str(dl / "*.png")) and glob.glob(str(dl / "*.json")))
        # Refine with the automatic mask: the page shows the mask the edit used
        tab("Refine")
        css("#auto-mask input[type=checkbox]").click()
        css("#edit-btn").click()
        assert "done" in status("#edit-status")
        wait(60).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#masks .thumbnail-item"))
        d.save_screenshot(str(shots / "5-auto-mask.png"))
    finally:
        d.quit()
    (png,) = glob.glob(str(dl / "*.png"))
    (side,) = glob.glob(str(dl / "*.json"))
    assert json.loads(Path(side).read_text())["edit_config"]["t0"] == 0.9
    text = Image.open(png).text["parameters"]
    assert (
        text.startswith("beikkpic a green circle") and "Checkpoint: 4" in text and "t0: 0.9" in text
    ), text


@pytest.mark.slow
def test_restart_during_a_tune_resumes_and_loses_nothing(srv, demo_photo, tmp_path):
    """Kill -9 the server mid-tune with another job queued; the next server resumes the tune
    from its last checkpoint and runs the queued job; finished jobs stay listed."""
    s = srv()
    c = s.client()
    first = _submit_tune(c, demo_photo, 4)
    assert _wait(c, first)["state"] == "done"
    long, queued = _submit_tune(c, demo_photo, 48), _submit_tune(c, demo_photo, 2, "another")
    q = JobQueue(s.data / "queue.sqlite")
    long_id, queued_id = q.find(long, None).id, q.find(queued, None).id
    tune_dir = s.data / "tunes" / f"tune-{long_id}" / "checkpoints"
    end = time.time() + 300
    while not (tune_dir / "step-000032.safetensors").exists():  # the checkpoints up to 32
        assert time.time() < end
        time.sleep(0.2)
    s.kill()
    assert q.get(long_id).state == "running" and q.get(queued_id).state == "queued"
    s2 = srv(data=s.data)
    c2 = s2.client()
    assert _wait(c2, long)["state"] == "done" and _wait(c2, queued)["state"] == "done"
    job = q.get(long_id)
    # the default checkpoints below the steps asked for, and the last
    saved = sorted({c for c in TuneConfig().schedule("full").save_at if c < 48} | {48})
    assert job.attempts == 2 and job.result["checkpoints"] == saved
    assert len(job.result["loss"]) == 48  # one history: the resumed run continued it
    assert job.progress["step"] == 48
    assert q.find(first, None).state == "done" and q.counts()["failed"] == 0


def _bomb(path: Path) -> Path:
    """A 1-bit PNG of 20000 x 20000 (400 MP) that is a few kB on disk."""
    Image.new("1", (20000, 20000)).save(path, optimize=True)
    return path


@pytest.mark.slow
def test_upload_limits_and_a_full_queue_answer_clearly(srv, demo_photo, tmp_path):
    from gradio_client import handle_file

    s = srv("--max-queue", "1")
    c = s.client()
    before = {p for p in tmp_path.rglob("*")}
    (tmp_path / "notes.png").write_text("this is not an image")
    bad = {
        "not an image": tmp_path / "notes.png",
        "decompression bomb|MP": _bomb(tmp_path / "bomb.png"),
    }
    for words, path in bad.items():
        with pytest.raises(Exception) as e:
            c.predict(handle_file(str(path)), "", 4, "world", "", api_name="/submit_tune")
        assert any(w in str(e.value) for w in words.split("|")), str(e.value)
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(26 * 2**20))  # over the 25 MB upload limit
    with pytest.raises(Exception) as e:
        c.predict(handle_file(str(big)), "", 4, "world", "", api_name="/submit_tune")
    assert "maximum file size" in str(e.value), str(
        e.value
    )  # Gradio's limit (launch max_file_size)
    odd = tmp_path / "..%2F..%2Fescape.png"  # a path-like client name: stored by content hash
    shutil.copy(demo_photo, odd)
    running = _submit_tune(c, str(odd), 400)  # keeps the worker busy
    time.sleep(1)
    _submit_tune(c, demo_photo, 2)  # waits: the queue now holds its 1
    with pytest.raises(Exception, match="queue is full"):
        _submit_tune(c, demo_photo, 2)
    q = JobQueue(s.data / "queue.sqlite")
    assert q.counts()["queued"] == 1 and q.find(running, None).state == "running"
    uploads = sorted(p.name for p in (s.data / "uploads").iterdir())
    assert all(len(n) == 36 and n.endswith(".png") for n in uploads), uploads
    s.kill()
    new = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in new if s.data not in (p, *p.parents) and p.parent != tmp_path]
    assert not outside, outside  # nothing but the data dir (and the test's own files) written


def _tuned(c, photo: str, steps: int = 4, preview: str = "") -> str:
    job = _submit_tune(c, photo, steps, "a red circle", preview)
    assert _wait(c, job)["state"] == "done"
    return job


@pytest.mark.slow
def test_api_refine_edit_with_mask_fidelity_and_sine(team, ana_tune, demo_photo, tmp_path):
    """The Refine tab's call through the API: seeds, the fidelity knob, SINE, a drawn mask
    (an ImageEditor layer); the PNGs come back with their parameters."""
    from gradio_client import handle_file

    c, tune = team.client("ana"), ana_tune
    w, h = Image.open(demo_photo).size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, w // 2, h))  # paint the left half: it may change
    layer.save(tmp_path / "layer.png")
    mask = {
        "background": handle_file(demo_photo),
        "layers": [handle_file(str(tmp_path / "layer.png"))],
        "composite": handle_file(demo_photo),
    }
    job, _ = c.predict(
        tune,
        "a green circle",
        "0,1",
        0.8,
        True,
        "",
        "sine",
        300,
        0.6,
        mask,
        "inversion",  # from the photo's inversion, with the automatic mask within the drawn one
        False,
        True,
        "otsu",
        0.4,
        "off",
        api_name="/submit_edit",
    )
    st = _wait(c, job)
    assert st["state"] == "done", st
    files = c.predict(job, api_name="/files")
    assert len(files) == 2
    text = Image.open(files[0]).text["parameters"]
    assert "SINE K: 300" in text and "Mask:" in text and "Batch seeds: 0 1" in text, text
    assert "Start: inversion" in text and "Auto mask threshold: 0.4" in text, text
    assert "Auto mask rule: otsu" in text, text
    stored = json.loads(Image.open(files[0]).text["unitune"])
    assert stored["edit_config"]["sine_v"] == 0.6
    masks = c.predict(job, api_name="/masks")  # the masks the edits used, one per image
    assert len(masks) == 2 and Image.open(masks[0]).size == Image.open(files[0]).size
    right = np.asarray(Image.open(masks[0]))[:, w // 2 + 1 :]
    assert not right.any()  # the intersection: nothing outside the painted left half
    with pytest.raises(Exception, match="empty"):  # a bad request: one clear line, not queued
        c.predict(
            *(tune, " ", "0", 0.5, False, "", "unitune", 400, 0.7, None, *NOISE),
            api_name="/submit_edit",
        )


@pytest.mark.slow
def test_concurrent_clients_finish_or_are_refused_cleanly(srv, demo_photo):
    """N clients submit an edit at once to a queue of 3: each job finishes or is refused with
    the full-queue message; prints the throughput (a load test, not a timing assertion)."""
    from concurrent.futures import ThreadPoolExecutor

    s = srv("--max-queue", "3")
    tune = _tuned(s.client(), demo_photo)
    n = 8

    def client(i: int):
        c = s.client()
        try:
            job, _ = c.predict(
                tune,
                "a green circle",
                str(i),
                0.5,
                False,
                "",
                "unitune",
                400,
                0.7,
                None,
                *NOISE,
                api_name="/submit_edit",
            )
        except Exception as e:  # noqa: BLE001
            return ("refused", str(e))
        return ("done" if _wait(c, job)["state"] == "done" else "failed", job)

    start = time.time()
    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(client, range(n)))
    wall = time.time() - start
    done = [o for o in outcomes if o[0] == "done"]
    refused = [o for o in outcomes if o[0] == "refused"]
    assert len(done) + len(refused) == n and done, outcomes
    assert all("queue is full" in msg for _, msg in refused), refused
    print(
        f"\nload: {n} clients, queue 3: {len(done)} done, {len(refused)} refused, "
        f"{wall:.1f} s, {len(done) / wall:.2f} edits/s"
    )


# --- one server shared by the tests below: three logins, a pre-existing file in --data ----------
USERS = {"ana": "ana-long-password", "bob": "bob-long-password", "carol": "carol-long-password"}


class Team(Srv):
    """A server with a login per user; ``client(user)`` / ``http(user)`` call it as that user."""

    def client(self, user: str = "ana"):
        from gradio_client import Client

        return Client(self.url, auth=(user, USERS[user]), verbose=False)

    def http(self, user: str = "ana"):
        import httpx

        h = httpx.Client(base_url=self.url, timeout=30)
        assert h.post("login", data={"username": user, "password": USERS[user]}).status_code == 200
        return h

    def gradio_tmp(self) -> Path:
        """The server's private Gradio folder (made under the TMPDIR the fixture gives it)."""
        (tmp,) = (self.data.parent / "tmp").glob("unitune-serve-*")
        return tmp


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    data = tmp_path_factory.mktemp("team") / "data"
    data.mkdir()
    (data / "notes.txt").write_text("in the data folder before the server started")
    logins = [a for u, pw in USERS.items() for a in ("--auth", f"{u}:{pw}")]
    (data.parent / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(data.parent / "tmp")}
    s = Team(data, *logins, "--limit", "max_seeds=4", "--limit", "max_tune_steps=5000", env=env)
    yield s
    s.kill()
    log = Path(s.log.name).read_text()
    assert "Traceback" not in log, log[-3000:]  # every refusal was one line, in the log too


@pytest.fixture(scope="module")
def ana_tune(team, demo_photo) -> str:
    """One finished 16-step tune of ana's (16: the fidelity knob's map starts there)."""
    # with a preview edit: rendered at its checkpoints while it tunes
    return _tuned(team.client("ana"), demo_photo, 16, preview="a green circle")


def _refused(call, *words: str) -> str:
    """``call`` is refused with one line naming one of ``words``."""
    with pytest.raises(Exception) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg.strip() and any(w in msg for w in words), msg
    return msg


@pytest.mark.slow
def test_the_server_hands_out_only_a_jobs_own_files(team, ana_tune):
    """Nothing under --data is served by path (the queue, uploads, checkpoints, outputs, a file
    that was there before the server), however the path is spelled; a job's own images come
    back through its token, with their parameters."""
    c, tune = team.client("ana"), ana_tune
    job, _ = c.predict(
        tune,
        "a green circle",
        "0",
        0.5,
        False,
        "",
        "unitune",
        400,
        0.7,
        None,
        *NOISE[:-1],
        "auto",  # the Refine tab's route: the map picks the branch, the PNG says which
        api_name="/submit_edit",
    )
    assert _wait(c, job)["state"] == "done"
    (png,) = c.predict(job, api_name="/files")
    text = Image.open(png).text["parameters"]
    assert "beikkpic a green circle" in text and "Route: " in text, text
    d = team.data.resolve()
    private = [
        d / "queue.sqlite",
        d / "notes.txt",
        *d.glob("uploads/*.png"),
        *d.glob("tunes/*/manifest.json"),
        *d.glob("tunes/*/checkpoints/*.safetensors"),
        *d.glob("edits/*/*.png"),
        *d.glob("edits/*/*.json"),
    ]
    assert len(private) >= 7, private
    h = team.http("ana")
    for p in private:
        for spelled in (
            str(p),
            str(p).replace("/", "%2F"),
            f"{team.gradio_tmp()}/../..{p}",
            f"{d}/./{p.relative_to(d)}",
        ):
            r = h.get(f"gradio_api/file={spelled}")
            assert r.status_code in (403, 404), (spelled, r.status_code)
    assert h.get("gradio_api/file=/etc/passwd").status_code in (403, 404)
    assert not any(team.gradio_tmp() in p.parents for p in private)  # Gradio's folder is elsewhere


@pytest.mark.slow
def test_an_uploaded_html_file_is_an_attachment_and_is_not_kept(team, tmp_path):
    """A script uploaded as a file is served back (to whoever has its unguessable path) only as
    a download, never inline; and once a request has read an upload that is no image, the
    upload is gone from the server."""
    from gradio_client import handle_file

    marker = b"UNITUNE-XSS-MARKER"
    page = b"<html><script>alert(document.cookie)</script>" + marker + b"</html>"
    h = team.http("ana")
    sent = set()
    for name, ctype in (("evil.html", "text/html"), ("evil.svg", "image/svg+xml")):
        (up,) = h.post("gradio_api/upload", files={"files": (name, page, ctype)}).json()
        sent.add(Path(up).parent.name)
        r = h.get(f"gradio_api/file={up}")
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"].startswith("attachment"), r.headers
        assert r.headers["content-type"] == "application/octet-stream", r.headers
    c = team.client("ana")
    (tmp_path / "evil.html").write_bytes(page)
    _refused(
        lambda: c.predict(
            handle_file(str(tmp_path / "evil.html")), "", 4, "world", "", api_name="/submit_tune"
        ),
        "Invalid file type",
    )
    (tmp_path / "evil.png").write_bytes(page)  # named like an image: reaches the server's check
    _refused(
        lambda: c.predict(
            handle_file(str(tmp_path / "evil.png")), "", 4, "world", "", api_name="/submit_tune"
        ),
        "not an image",
    )
    kept = [p for p in team.gradio_tmp().rglob("evil.*") if marker in p.read_bytes()]
    kept = [p for p in kept if p.parent.name not in sent]  # the two sent by hand above stay
    assert not kept, kept  # the upload that was read is deleted
    assert not [p for p in team.data.rglob("*") if p.is_file() and marker in p.read_bytes()]


@pytest.mark.slow
def test_jobs_belong_to_the_login_that_made_them(team, ana_tune):
    from gradio_client import Client

    with pytest.raises(Exception):  # noqa: B017 - no login, no page
        Client(team.url, verbose=False)
    ana, bob, tune = team.client("ana"), team.client("bob"), ana_tune
    assert len(tune) == 32 and int(tune, 16) >= 0  # 128 random bits, not a sequence number
    assert _wait(ana, tune)["state"] == "done"
    # the tune's previews: its owner gets the edit rendered at every checkpoint (the last too:
    # a finished tune waits for them), with parameters
    previews = ana.predict(tune, api_name="/previews")
    saved = sorted({c for c in TuneConfig().schedule("full").save_at if c < 16} | {16})
    assert len(previews) == 2 * len(saved), previews  # each preview batch: seeds 0 and 1
    steps = []
    for png in previews:
        params = json.loads(Image.open(png).text["unitune"])
        steps.append(params["edit_config"]["checkpoint"])
        assert "a green circle" in params["prompt"]
    assert sorted(set(steps)) == saved
    for call in (
        lambda: bob.predict(tune, api_name="/job"),
        lambda: bob.predict(tune, api_name="/files"),
        lambda: bob.predict(tune, api_name="/previews"),
        lambda: bob.predict(tune, api_name="/cancel"),
    ):
        _refused(call, "no such job")
    _refused(
        lambda: bob.predict(
            tune,
            "a green circle",
            "0",
            0.5,
            False,
            "",
            "unitune",
            400,
            0.7,
            None,
            *NOISE,
            api_name="/submit_edit",
        ),
        "no such tune",
    )
    _refused(
        lambda: bob.predict(tune, "a green circle", "1", "0", api_name="/submit_grid"),
        "no such tune",
    )
    _refused(lambda: ana.predict("1", api_name="/job"), "no such job")  # ids are no names


@pytest.mark.slow
def test_one_request_cannot_occupy_the_server(team, ana_tune, demo_photo):
    """Requests beyond the operator's limits, of the wrong type or NaN are refused in one line
    before anything is queued; a running job stops when cancelled, a queued one never runs."""
    c, tune = team.client("ana"), ana_tune
    q = JobQueue(team.data / "queue.sqlite")
    before = q.counts()["queued"] + q.counts()["running"]
    edit = lambda seeds="0", prompt="a green circle", K=400, fid=0.5, use=False: c.predict(  # noqa: E731
        tune, prompt, seeds, fid, use, "", "unitune", K, 0.7, None, *NOISE, api_name="/submit_edit"
    )
    _refused(lambda: edit(seeds="0,1,2,3,4"), "more than this server's 4")
    _refused(lambda: edit(seeds=str(2**64)), "a seed must be in")
    _refused(lambda: edit(seeds="zero"), "whole number")
    _refused(lambda: edit(prompt="x" * 2_000_000), "characters")
    _refused(lambda: edit(K="abc"), "--K")
    _refused(lambda: edit(fid="nan", use=True), "finite")
    routed_sine = (*NOISE[:-1], "auto")  # the route picks UniTune CFG edits only
    _refused(
        lambda: c.predict(
            *(tune, "a green circle", "0", 0.5, False, "", "sine", 400, 0.7, None, *routed_sine),
            api_name="/submit_edit",
        ),
        "--route auto",
    )
    _refused(
        lambda: c.predict(tune, "x", ",".join(["0.5"] * 100), "0", api_name="/submit_grid"),
        "max_grid_cells",
        "more than",
    )
    _refused(lambda: _submit_tune(c, demo_photo, 10**9), "steps must be in")
    _refused(lambda: _submit_tune(c, demo_photo, "many"), "whole number")
    assert q.counts()["queued"] + q.counts()["running"] == before  # nothing was queued
    long = _submit_tune(c, demo_photo, 5000)
    waiting = _submit_tune(c, demo_photo, 3)
    assert c.predict(waiting, api_name="/cancel") == "cancelled"  # queued: ends now
    end = time.time() + 300
    while (c.predict(long, api_name="/job").get("progress") or {}).get("step", 0) < 2:
        assert time.time() < end
        time.sleep(0.3)
    assert c.predict(long, api_name="/cancel") == "running"  # stops at its next step
    st = _wait(c, long)
    assert st["state"] == "cancelled" and st["progress"]["step"] < 5000, st
    assert c.predict(waiting, api_name="/job")["state"] == "cancelled"
    assert q.find(waiting, "ana").started is None  # it never ran


@pytest.mark.slow
def test_password_guessing_is_locked_out(team):
    """After 5 wrong passwords a name is locked (the right password refused too), for a time
    that doubles with each further failure; the other names are not affected."""
    import httpx

    def login(user: str, pw: str) -> int:
        return httpx.post(team.url + "login", data={"username": user, "password": pw}).status_code

    assert [login("carol", f"guess-{i}") for i in range(5)] == [400] * 5
    assert login("carol", USERS["carol"]) == 400  # locked: 1 s after the 5th failure
    assert login("bob", USERS["bob"]) == 200
    time.sleep(1.5)
    assert login("carol", USERS["carol"]) == 200
