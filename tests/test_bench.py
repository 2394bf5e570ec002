"""`unitune bench edits`: the suite, the keep mask, the Pareto frontier, and a tiny end-to-end run
on the tiny seeded model (tune, every method, tables, plots, resume, CLI)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from unitune.bench import BenchConfig, keep_mask, make_suite, pareto_front, run_bench
from unitune.bench.config import FULL, KEEP_METHODS, MEDIUM, PRESETS, QUICK
from unitune.bench.edits import plan, reads_back
from unitune.bench.report import COLUMNS, aggregate, format_summary, frontiers
from unitune.bench.suite import BOX_RADIUS
from unitune.cli import build_parser, main
from unitune.world.edits import KINDS
from unitune.world.render import OUTLINE
from unitune.world.scene import Obj, Scene


@pytest.fixture(scope="module")
def suite3():
    return make_suite(3)


def test_suite_is_deterministic_and_a_prefix(suite3):
    again = make_suite(2)
    assert [i.sid for i in suite3] == ["s000", "s001", "s002"]
    assert again == suite3[:2]  # frozen dataclasses: the same scenes, captions and edits
    for item in suite3:
        assert tuple(e.kind for e in item.edits) == KINDS
        assert all(e.target != item.scene for e in item.edits)
        assert item.caption and all(e.prompt != item.caption for e in item.edits)


def test_presets_sizes_and_grids():
    QUICK.validate()
    FULL.validate()
    MEDIUM.validate()
    assert FULL.n_scenes >= 40 and QUICK.n_scenes == 4 and len(QUICK.seeds) == 2
    assert FULL.unitune_cfgs == (3.0, 7.5, 15.0, 32.0)
    assert set(FULL.unitune_checkpoints) == {16, 32, 64, 128} == set(FULL.save_at)
    no_cfg = {(c, t0) for c, t0, w in FULL.unitune_points() if w == 1.0}  # claim 2's points
    assert no_cfg == {(c, t0) for c in (16, 32, 64, 128) for t0 in (0.8, 1.0)}
    # medium's own grid (4 seeds for best-of-N), not the full preset's it is derived from
    # medium's own grid (4 seeds for best-of-N) holds the edit default (c32 t0 0.9 w 7.5)
    assert len(MEDIUM.seeds) == 4 and len(FULL.seeds) == 2
    assert (32, 0.9, 7.5) in MEDIUM.unitune_points() and (32, 0.9, 7.5) in FULL.unitune_points()
    methods = {m for m, _ in plan(QUICK)}  # every method, the +interp ones derived
    assert methods == {"sdedit", "unitune", "unitune+pg", "sine", *KEEP_METHODS}
    for m, o in plan(FULL):
        if m.startswith("sdedit"):  # the untuned baseline, with and without the keep tricks
            assert o["checkpoint"] == 0 and not o["rare_token"]
        if o.get("start") == "inversion":  # deterministic: one seed
            assert o["seeds"] == FULL.seeds[:1]
    assert {o.get("auto_mask", False) for m, o in plan(QUICK)} == {True, False}
    with pytest.raises(ValueError, match="not saved"):
        replace(QUICK, unitune_checkpoints=(128,)).validate()
    assert QUICK.fingerprint() == replace(QUICK, n_scenes=9).fingerprint() != FULL.fingerprint()
    for preset in PRESETS.values():
        preset.validate()
    # the route check re-samples the automask-rules run's scenes from the same tunes, and 8 more
    rc, amr = PRESETS["route-check"], PRESETS["automask-rules"]
    assert (rc.tune_steps, rc.save_at, rc.steps, rc.seeds) == (
        amr.tune_steps,
        amr.save_at,
        amr.steps,
        amr.seeds,
    )
    assert rc.n_scenes == 2 * amr.n_scenes and len(plan(rc)) == 5
    # ... and its runs at the full preset's sampling and of the local branch's candidates reuse
    # those tunes, on the full preset's 40 scenes
    for name in ("route-check-full", "route-local"):
        other = PRESETS[name]
        assert (other.tune_steps, other.save_at, other.n_scenes) == (32, (32,), FULL.n_scenes)
    assert (PRESETS["route-check-full"].steps, PRESETS["route-check-full"].seeds) == (25, (0, 1))
    assert len(plan(PRESETS["route-check-full"])) == 5
    # the route samples the edit default's point for global edits; a preset without the route
    # keeps the fingerprint it had before the route existed (its runs stay reusable)
    routed = [o for m, o in plan(QUICK) if m == "unitune+route"]
    assert routed == [
        dict(checkpoint=32, t0=0.9, cfg=7.5, route="auto", route_spread=0.85)
        | dict(route_t0=0.8, route_cfg=3.0)
    ]
    assert replace(amr, route_unitune=((32, 0.8, 3.0),)).fingerprint() == amr.fingerprint()
    assert replace(amr, route_settings=()).fingerprint() == amr.fingerprint()
    # ... and a run with the route is not reused once the route's own settings change
    moved = replace(QUICK, route_settings=(("route_t0", 0.9),))
    assert moved.fingerprint() != QUICK.fingerprint()


def _scene_with(obj: Obj) -> Scene:
    return Scene("grey", (obj,))


def test_keep_mask_regions(suite3):
    from unitune.world.edits import Edit

    src = _scene_with(Obj("circle", "red", "small", "filled", "center"))  # centre (32, 32), r 6
    tgt = _scene_with(Obj("circle", "blue", "small", "filled", "center"))
    m = keep_mask(src, Edit("recolour", tgt, "", 0), (64, 64), margin=4.0)
    assert m.shape == (1, 1, 64, 64) and set(m.unique().tolist()) == {0.0, 1.0}
    # the box's half-side, from the code's own constants: 1.2 x radius 6 + half an outline
    # stroke 1.1 + margin 4 = 12.3 units = pixels at 64 px, so pixel centres 20.5 .. 43.5
    half = BOX_RADIUS * src.objects[0].radius() + OUTLINE / 2 + 4.0
    assert half == pytest.approx(12.3)
    inside = m[0, 0] == 0
    assert inside[32, 32] and inside[20, 20] and inside[43, 43] and not inside[19, 32]
    assert int(inside.sum()) == 24 * 24
    # the same mask at 32 px covers the same part of the canvas
    assert abs(keep_mask(src, Edit("recolour", tgt, "", 0), (32, 32)).mean() - m.mean()) < 0.02
    # add: only the target's new object; background: the objects kept ("objects") or all
    item = suite3[0]
    by = {e.kind: e for e in item.edits}
    add = keep_mask(item.scene, by["add"], (64, 64))
    new = by["add"].target.objects[by["add"].obj]
    cx, cy = (int(v) for v in new.center())
    assert add[0, 0, cy, cx] == 0 and 0.5 < add.mean() < 1
    bg = keep_mask(item.scene, by["background"], (64, 64))
    o = item.scene.objects[0]
    assert bg[0, 0, int(o.center()[1]), int(o.center()[0])] == 1 and bg.mean() < 0.5
    full = keep_mask(item.scene, by["background"], (64, 64), background="full")
    assert torch.equal(full, torch.ones(1, 1, 64, 64))


def test_pareto_front_on_hand_made_points():
    pts = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.5, 0.5), (0.2, 0.9), (0.95, 0.0)]
    # (0.4, 0.4) is dominated by (0.5, 0.5); (0.1, 0.9) by (0.2, 0.9); one duplicate is kept
    assert pareto_front(pts) == [5, 1, 0, 6]
    assert pareto_front([]) == [] and pareto_front([(0.3, 0.3)]) == [0]
    rows = [
        {"method": "a", "label": str(i), "fidelity": x, "success": y}
        for i, (x, y) in enumerate(pts)
    ]
    assert [r["label"] for r in frontiers(rows)["a"]] == ["5", "1", "0", "6"]


def test_reads_back_the_suite(suite3):
    from unitune.bench.edits import base_image
    from unitune.world.oracle import read

    assert all(reads_back(i.scene, read(base_image(i.scene))) for i in suite3)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_tiny_end_to_end_and_resume(family, tiny_models, tmp_path, capsys):
    bc = BenchConfig(
        n_scenes=1,
        kinds=("recolour", "background"),
        seeds=(0, 1),
        steps=2,
        tune_steps=2,
        save_at=(1, 2),
        sdedit_t0s=(0.8,),
        sdedit_cfgs=(7.5,),
        unitune_checkpoints=(1, 2),
        unitune_t0s=(1.0,),
        unitune_cfgs=(7.5,),
        pg_points=((2, 0.9, 7.5),),
        sine_checkpoint=2,
        sine_Ks=(500,),
        sine_vs=(0.7,),
        keep_unitune=((2, 0.8, 7.5),),
        keep_sdedit=((0.8, 7.5),),
        route_unitune=((2, 0.9, 7.5),),
        model=tiny_models[family],
    )
    logs: list[str] = []
    s = run_bench(bc, tmp_path / "out", device="cpu", log=logs.append)
    # 8 configs x 2 edits x 2 seeds (sdedit, its +interp, 2 unitune, their +interp, pg, sine);
    # the 12 keep methods and their +interp: 2 edits x (2 seeds for the 4 auto-mask-only ones and
    # the route, 1 for the 7 inversion starts) x 2; reconstruction: checkpoints {0, 1, 2} x CFG
    # {1, 7.5} x 2 seeds, and from the inversion at CFG 1 (1 seed)
    assert s["scenes_run"] == 1
    assert s["n_samples"] == 8 * 2 * 2 + 2 * (5 * 2 + 7) * 2 + 3 * 2 * 2 + 3
    base = {"sdedit", "sdedit+interp", "unitune", "unitune+interp", "unitune+pg", "sine"}
    assert set(s["methods"]) == base | {f"{m}{i}" for m in KEEP_METHODS for i in ("", "+interp")}
    out = tmp_path / "out"
    for f in (
        "results.csv",
        "configs.csv",
        "results.json",
        "frontier.png",
        "sine_curves.png",
        "figure10.png",
    ):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert tuple(rows[0]) == COLUMNS and len(rows) == s["n_samples"]
    rec = [r for r in rows if r["method"] == "reconstruct"]
    assert len(rec) == 15 and {r["checkpoint"] for r in rec} == {"0", "1", "2"}
    labels = [r["label"] for r in s["reconstruction"]]
    assert labels[:2] == ["c0 t0=1 w=1", "c0 t0=1 w=7.5"] and "inversion c2 t0=1 w=1" in labels
    for r in rows:  # the keep methods' columns: how it started, how much its mask let change
        how = r["method"] if r["method"] != "reconstruct" else r["label"]
        local = r["route"] == "local"  # a routed edit's branch: inversion inside the auto mask
        assert (r["route"] in ("local", "global")) == r["method"].startswith("unitune+route")
        assert r["start"] == ("inversion" if "inversion" in how or local else "noise")
        assert (r["auto_mask_frac"] != "") == ("automask" in r["method"] or local)
        assert r["auto_mask_frac"] == "" or 0 < float(r["auto_mask_frac"]) <= 1
    assert all((out / "work" / r["scene"] / r["file"]).is_file() for r in rows)  # every sample kept
    rows = [r for r in rows if r["method"] != "reconstruct"]
    for r in rows:
        assert 0 <= float(r["lpips_masked"]) and 0 <= float(r["preservation"]) <= 1
        assert r["success"] in ("True", "False") and float(r["keep_frac"]) > 0
    sine = [r for r in rows if r["method"] == "sine"]
    assert sine and all(r["sine_K"] == "500" and r["sine_v"] == "0.7" for r in sine)
    assert all(r["sine_K"] == "" for r in rows if r["method"] != "sine")
    data = json.loads((out / "results.json").read_text())
    assert len(data["configs"]) == 8 + 24 + 9 and data["configs"] == aggregate(data["records"])
    assert "Pareto frontier" in format_summary(s)
    # the interpolated samples are the UniTune ones pulled toward the base: never further away
    u = {(r["label"], r["kind"], r["seed"]): r for r in data["records"] if r["method"] == "unitune"}
    for r in (r for r in data["records"] if r["method"] == "unitune+interp"):
        assert r["psnr_full"] >= u[(r["label"], r["kind"], r["seed"])]["psnr_full"] - 0.01
    # rerun: the scene's results exist and are reused (no tuning, no sampling)
    logs.clear()
    s2 = run_bench(bc, out, device="cpu", log=logs.append)
    assert s2["scenes_run"] == 0 and "skipped" in logs[0]
    assert json.loads((out / "results.json").read_text())["records"] == data["records"]
    # CLI wiring
    args = build_parser().parse_args(["bench", "edits", "--quick", "--out", "o", "--device", "cpu"])
    assert args.command == "bench" and args.bench == "edits" and args.quick and args.work is None
    assert main(["bench", "edits", "--quick", "--preset", "full"]) == 2
    assert "--quick contradicts --preset full" in capsys.readouterr().err
    assert main(["bench", "edits", "--quick", "--lora-rank", "4"]) == 2
    assert "--lora-rank needs --tune-method lora" in capsys.readouterr().err


@pytest.mark.slow
def test_lora_tunes_back_to_back(tiny_model, tmp_path):
    """--tune-method lora: each scene's tune starts from the pretrained weights again, although
    PEFT leaves its wrappers on the shared UNet: scene 2 tuned right after scene 1 gives the same
    samples as scene 2 tuned on a freshly loaded model."""
    import shutil

    bc = BenchConfig(
        n_scenes=2,
        kinds=("recolour",),
        seeds=(0,),
        steps=2,
        tune_steps=2,
        save_at=(1, 2),
        sdedit_t0s=(),
        unitune_checkpoints=(2,),
        unitune_t0s=(1.0,),
        unitune_cfgs=(7.5,),
        pg_points=(),
        sine_checkpoint=2,
        sine_Ks=(),
        recon_cfgs=(7.5,),
        recon_inversion_cfgs=(),
        keep_methods=(),
        model=tiny_model,
        tune_extra=(("method", "lora"),),
    )
    assert bc.fingerprint() != replace(bc, tune_extra=()).fingerprint()
    s = run_bench(bc, tmp_path / "a", device="cpu", log=None)
    assert s["scenes_run"] == 2
    m = json.loads((tmp_path / "a" / "work" / "s001" / "tune" / "manifest.json").read_text())
    assert m["settings"]["method"] == "lora" and m["status"] == "complete"
    shutil.copytree(tmp_path / "a" / "work" / "s000", tmp_path / "b" / "work" / "s000")
    s = run_bench(bc, tmp_path / "b", device="cpu", log=None)  # s000 reused: s001 on a fresh model
    assert s["scenes_run"] == 1

    def scene2(out: str) -> list:
        recs = json.loads((tmp_path / out / "results.json").read_text())["records"]
        return [(r["label"], r["lpips_full"]) for r in recs if r["scene"] == "s001"]

    assert scene2("a") == scene2("b") and len(scene2("a")) == 3 * 1 + 2


@pytest.mark.slow
def test_shards_split_the_suite(tiny_model, tmp_path, capsys):
    """--shard K/N: N workers on one work folder each run their scenes; a last run without a
    shard reuses them all and reports every scene."""
    bc = BenchConfig(
        n_scenes=2,
        kinds=("recolour",),
        seeds=(0,),
        steps=1,
        tune_steps=1,
        save_at=(1,),
        sdedit_t0s=(),
        unitune_checkpoints=(1,),
        unitune_t0s=(1.0,),
        unitune_cfgs=(7.5,),
        pg_points=(),
        sine_checkpoint=1,
        sine_Ks=(),
        recon_cfgs=(7.5,),
        recon_inversion_cfgs=(),
        keep_methods=(),
        model=tiny_model,
        save_samples=False,
    )
    s = run_bench(bc, tmp_path / "o", device="cpu", log=None, shard=(1, 2))
    assert s["scenes_run"] == 1 and s["scenes_left"] == 1
    recs = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert {r["scene"] for r in recs} == {"s001"}
    assert "other shards" in format_summary(s)
    assert not (tmp_path / "o" / "work" / "s000").exists()
    s = run_bench(bc, tmp_path / "o", device="cpu", log=None)
    assert s["scenes_run"] == 1 and s["scenes_left"] == 0
    recs = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert {r["scene"] for r in recs} == {"s000", "s001"}
    with pytest.raises(ValueError, match="shard"):
        run_bench(bc, tmp_path / "o", device="cpu", log=None, shard=(2, 2))
    assert main(["bench", "edits", "--quick", "--shard", "2/2"]) == 2
    assert "--shard must be K/N" in capsys.readouterr().err


def test_figure10_from_kept_samples(tmp_path):
    """fig10 lays out kept samples of the CFG with the fullest grid: every (checkpoint, t0)
    sample of seed 0 at that CFG is in the sheet, another CFG's or seed's sample is not; scenes
    without samples are passed over."""
    from PIL import Image

    from unitune.bench.fig10 import figure10

    colours = {}
    records = []
    for sid in ("s000", "s001"):
        (tmp_path / sid / "samples").mkdir(parents=True)
        Image.new("RGB", (16, 16), (255, 255, 255)).save(tmp_path / sid / "base.png")
        cells = [
            (0, 0.8, 7.5, 0),
            (16, 0.8, 7.5, 0),
            (16, 1.0, 7.5, 0),
            (16, 1.0, 15.0, 0),
            (16, 1.0, 7.5, 1),
        ]
        for c, t0, w, seed in cells:
            name = f"samples/{c}_{t0}_{w}_{seed}.png"
            rgb = (len(colours) * 9 % 256, 100 + len(colours), 7)
            colours[(sid, c, t0, w, seed)] = rgb
            Image.new("RGB", (16, 16), rgb).save(tmp_path / sid / name)
            records.append(
                {
                    "method": "sdedit" if c == 0 else "unitune",
                    "scene": sid,
                    "kind": "recolour",
                    "checkpoint": c,
                    "t0": t0,
                    "cfg": w,
                    "seed": seed,
                    "success": c == 16,
                    "file": name,
                }
            )
    # a scene restored from stored results (records, no samples) first: skipped, not a blank block
    restored = [{**r, "scene": "s009"} for r in records[:5]]
    out = figure10(restored + records, tmp_path, tmp_path / "fig.png", n_scenes=2, cell_size=32)
    px = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    seen = {tuple(int(c) for c in p) for p in np.unique(px, axis=0)}
    for (_, c, t0, w, seed), rgb in colours.items():
        assert (rgb in seen) == (w == 7.5 and seed == 0), (c, t0, w, seed)
    assert {(40, 170, 60), (210, 50, 50)} <= seen  # verdict borders: success and failure
    assert figure10([], tmp_path, tmp_path / "none.png") is None


def test_bench_store_round_trip(tmp_path):
    """unitune.bench.store: stored scenes come back as results.json the bench will reuse; a
    scene already there with the same fingerprint is left alone; an unchanged store is not
    rewritten (byte-stable gzip)."""
    from unitune.bench import store as bs

    work, store = tmp_path / "work", tmp_path / "store"
    scenes = {
        sid: {"fingerprint": f"fp-{sid}", "scene": sid, "records": [{"seed": i, "x": 0.5}]}
        for i, sid in enumerate(("s000", "s001"))
    }
    for sid, data in scenes.items():
        (work / sid).mkdir(parents=True)
        (work / sid / "results.json").write_text(json.dumps(data))
    (work / "s002").mkdir()  # a scene still running: no results.json, nothing stored
    assert bs.store(work, store) == ["s000", "s001"]
    assert sorted(p.name for p in store.iterdir()) == ["s000.json.gz", "s001.json.gz"]
    assert bs.store(work, store) == []  # same records, same bytes
    fresh = tmp_path / "fresh"
    assert bs.restore(store, fresh) == ["s000", "s001"]
    for sid, data in scenes.items():
        assert json.loads((fresh / sid / "results.json").read_text()) == data
    assert bs.restore(store, fresh) == []
    (fresh / "s001" / "results.json").write_text(json.dumps({"fingerprint": "old settings"}))
    assert bs.restore(store, fresh) == ["s001"]  # other settings: replaced by the stored scene


@pytest.mark.slow
def test_bench_speed_times_both_implementations(tiny_model, tmp_path, capsys):
    """The speed bench times every case against diffusers, interleaved in one child process; it
    writes medians, spreads, ratios, the tune folder's sizes and the command that reproduces it
    (no timing is asserted: machines are noisy). Peak memory (a child per implementation and
    case): the LoRA test below."""
    out = tmp_path / "speed.json"
    argv = [
        "bench",
        "speed",
        "--model",
        tiny_model,
        "--steps",
        2,
        "--batch",
        1,
        "--tune-steps",
        2,
        "--repeats",
        2,
        "--no-memory",
        "--out",
        out,
        "--device",
        "cpu",
        "--quiet",
    ]
    code = main([str(a) for a in argv])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(out.read_text())
    res = summary["results"]
    assert set(res) == {"edit", "edit-t0", "tune"}
    for name, case in res.items():
        n = 2 * 2 if name == "tune" else 2  # rounds x timed steps per round; rounds x 1 edit call
        for impl in ("unitune", "diffusers"):
            assert case[impl]["n"] == n and case[impl]["median_s"] > 0
            assert "peak_mb" not in case[impl]  # --no-memory
        assert case["ratio"] == pytest.approx(
            case["unitune"]["median_s"] / case["diffusers"]["median_s"], rel=1e-2
        )
        assert case["pair_ratios"]["min"] <= case["pair_ratios"]["max"]
    folder = res["tune"]["tune_folder"]
    assert folder["resume_state_left"] is False and folder["checkpoint_mb"] > 0
    assert folder["default_schedule_4_checkpoints_mb"] == pytest.approx(
        folder["other_files_mb"] + 4 * folder["checkpoint_mb"], abs=0.1
    )
    assert summary["command"].startswith("unitune bench speed --model ")
    assert "--tune-steps 2" in summary["command"] and "--repeats 2" in summary["command"]


def test_bench_speed_times_a_lora_tune(tiny_model, tmp_path, capsys):
    """--method lora times both implementations' LoRA steps at the model's own rank (the
    diffusers-side loop resolves the rank and learning rate from the model's defaults as `unitune
    tune` does; it crashed on an unset rank before), and weighs each one's peak memory alone."""
    out = tmp_path / "speed.json"
    argv = ["bench", "speed", "--model", tiny_model, "--method", "lora", "--cases", "tune"]
    argv += ["--tune-steps", "1", "--repeats", "1", "--out", str(out)]
    code = main([*argv, "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"tune"}
    assert all(res["tune"][i]["n"] == 1 for i in ("unitune", "diffusers"))
    assert all(res["tune"][i]["peak_mb"] > 0 for i in ("unitune", "diffusers"))
    assert "--method lora" in json.loads(out.read_text())["command"]


def test_random_weight_models_have_the_released_architectures():
    """--random-weights builds SD 1.5 and SDXL with exactly the released models' parameter
    counts per component (on the meta device: nothing is allocated)."""
    import torch

    from unitune.backbones.random_weights import ARCHS, RELEASED_PARAMS, components

    for arch in ARCHS:
        with torch.device("meta"):
            parts = components(arch)
        got = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
        assert got == RELEASED_PARAMS[arch], arch


@pytest.mark.slow
def test_the_2026_families_released_configs_have_their_stated_sizes():
    """scripts/family_sizes.py's configs of FLUX.2 [dev] / [klein] 4B, 9B, Qwen-Image and Z-Image
    (transformer and text encoder, built on the meta device) count to the sizes their model
    cards state, at the cards' precision."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "family_sizes.py"
    spec = importlib.util.spec_from_file_location("family_sizes", path)
    sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizes)
    for family in sizes.TARGETS:
        nets = sizes.networks(family)
        for name, net in nets.items():
            n = sum(p.numel() for p in net.parameters())
            assert sizes.rounds_to(n, sizes.STATED[family, name]), (family, name, n)
    assert not sizes.rounds_to(3_400_000_000, "4B") and sizes.rounds_to(8_294_000_000, "8.29B")


def test_bench_speed_rejects_bad_arguments_before_loading(capsys):
    for argv, what in (
        (["--cases", "edit,fly"], "unknown case 'fly'"),
        (["--resolution", "100"], "--resolution must be a positive multiple of 64"),
        (["--tune-batch", "0"], "--tune-batch must be >= 1"),
        (["--random-weights", "sd9"], "invalid choice"),
    ):
        code = main(["bench", "speed", *argv, "--out", "never-written.json"])
        err = capsys.readouterr().err
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1, err
