"""Judge `unitune export` files by InvokeAI 6.14.2's own loaders, offline, on CPU.

An SD 1.5-architecture model with random fp16 weights (tools tell a model by its tensor shapes)
is tuned 2 steps at 64 px on skimage's chelsea, as a LoRA and as a full tune. Every export gets
its wall time, peak RSS (/usr/bin/time -v), size, stored dtype and InvokeAI's probe
(ModelConfigFactory.from_model_on_disk: type / base / format). Each LoRA is loaded by InvokeAI's
LoRALoader._load_model and patched into a diffusers UNet (fp32, from the fp16 base) by
LayerPatcher.apply_smart_model_patches (prefix "lora_unet_", force_direct_patching). layers: LoRA
layers InvokeAI's LayerPatcher._get_submodule resolves; unmatched: those it skips (it only warns).
rel_error = ||W_invoke - W_ref|| / ||W_ref - W_base|| over the UNet's weights; W_ref: for the LoRA
tune, unitune's merged export of the same checkpoint at --dtype fp32 (rel_error_vs_fp16_merged: the
default fp16 merged folder, where fp16 rounding dominates); for the full tune's rank-8 LoRAs, base
+ the file's own (alpha/r) B A (rel_error_vs_merged: its fp32 merged folder, i.e. the rank-8
truncation plus the biases / norms a LoRA cannot carry).

InvokeAI runs in its own venv (--venv; made if missing with --system-site-packages, so this
environment's torch / diffusers, plus `pip install --no-deps` of invokeai and what its probe and
loader import). torchvision there is a PLACEHOLDER: the offline mirror has no CPU build for torch
2.13 and nothing on the probe / load / patch path calls it, so an import-only package goes on the
venv's path (every torchvision.* imports; calling anything raises NotImplementedError).

Run (15 min on 2 cores from scratch; venv, model and tunes are reused, exports redone):
    OMP_NUM_THREADS=2 python scripts/interop_invokeai.py [--work DIR] [--venv DIR] [--out JSON]
Writes docs/interop_invokeai.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVOKEAI = "6.14.2"
PKGS = [f"invokeai=={INVOKEAI}", "blake3", "gguf", "picklescan", "einops", "deprecated"]
PKGS += ["spandrel", "compel", "onnxruntime", "onnx", "ml_dtypes", "opencv-python-headless"]
TORCHVISION = (
    "placeholder: an import-only torchvision package on the venv's path (no CPU wheel for torch "
    "2.13 on the mirror; InvokeAI's probe / LoRA load / patch path never calls it)"
)
# (format, tune, output name, extra flags); *-fp32 merged folders are the comparison references
EXPORTS = [
    ("kohya-lora", "lora", "lora-kohya.safetensors", []),
    ("diffusers-lora", "lora", "lora-diffusers", []),
    ("diffusers-lora", "lora", "lora-diffusers.safetensors", []),
    ("merged", "lora", "lora-merged.safetensors", []),
    ("merged", "lora", "lora-merged", []),
    ("merged", "lora", "lora-merged-fp32", ["--dtype", "fp32"]),
    ("lora-from-full", "full", "full-lff-r8", ["--rank", "8"]),
    ("kohya-lora", "full", "full-kohya-r8.safetensors", ["--rank", "8"]),
    ("merged", "full", "full-merged.safetensors", []),
    ("merged", "full", "full-merged-fp32", ["--dtype", "fp32"]),
]
REFS = {  # LoRA rows: reference name -> merged folder (or "own" = base + the file's own B A)
    "lora": {"rel_error": "lora-merged-fp32", "rel_error_vs_fp16_merged": "lora-merged"},
    "full": {"rel_error": "own", "rel_error_vs_merged": "full-merged-fp32"},
}

STUB = '''"""torchvision PLACEHOLDER (unitune scripts/interop_invokeai.py): import-only, no ops.
Every torchvision.* submodule imports, every attribute is a class; calling one raises."""
import importlib.abc, importlib.machinery, sys, types
__version__ = "0.0.0+placeholder"
class _Meta(type):
    def __getattr__(c, n): return _attr(c.__qualname__, n)
    def __call__(c, *a, **k): raise NotImplementedError("placeholder: " + c.__qualname__)
def _attr(mod, n):
    if n.startswith("__"): raise AttributeError(n)
    return sys.modules.get(mod + "." + n) or _Meta(n, (), {"__qualname__": mod + "." + n})
class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__, m.__getattr__ = [], lambda n: _attr(spec.name, n)
        return m
    def exec_module(self, module): pass
sys.meta_path.insert(0, _Finder())
__getattr__ = lambda n: _attr(__name__, n)
'''

CHECKER = r"""import copy, json, logging, sys, warnings
warnings.filterwarnings("ignore")
import torch
# import order matters: layers.utils first hits an upstream circular import
from invokeai.backend.model_manager.configs.factory import ModelConfigFactory
from invokeai.backend.model_manager.load.model_loaders.lora import LoRALoader
from invokeai.backend.patches.layer_patcher import LayerPatcher
from invokeai.app.services.config.config_default import get_config
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file

spec = json.load(open(sys.argv[1]))
UNET = "unet/diffusion_pytorch_model.safetensors"
unet = UNet2DConditionModel.from_pretrained(spec["base"], subfolder="unet",
                                            torch_dtype=torch.float32).eval()
base = safe_open(f"{spec['base']}/{UNET}", "pt")
P = "lora_unet_"

def check(cfg, refs):
    loader = LoRALoader(app_config=get_config(), logger=logging.getLogger("c"), ram_cache=None)
    cfg2 = copy.copy(cfg)
    cfg2.path = str(loader._get_model_path(cfg))
    patch = loader._load_model(cfg2)
    flat = not any("." in k for k in patch.layers)
    hit, miss = {}, []
    for k in patch.layers:
        try:
            if not k.startswith(P):
                raise AttributeError(k)
            hit[LayerPatcher._get_submodule(unet, k[len(P):], flat)[0] + ".weight"] = k
        except AttributeError:
            miss.append(k)
    sd = load_file(cfg2.path)
    def own(name, w0):  # base + the file's own (alpha / r) B A: InvokeAI-independent
        k = hit.get(name)
        if k is None:
            return w0
        down, up = sd[k + ".lora_down.weight"].float(), sd[k + ".lora_up.weight"].float()
        alpha = float(sd[k + ".alpha"]) if k + ".alpha" in sd else down.shape[0]
        ba = (up.flatten(1) @ down.flatten(1)).reshape(w0.shape)
        return w0 + ba * (alpha / down.shape[0])
    files = {n: safe_open(f"{p}/{UNET}", "pt") for n, p in refs.items() if p != "own"}
    acc = {n: [0.0, 0.0] for n in refs}
    changed = 0
    with LayerPatcher.apply_smart_model_patches(model=unet, patches=[(patch, 1.0)], prefix=P,
                                                dtype=torch.float32, force_direct_patching=True):
        for name, p in unet.named_parameters():
            w0, w = base.get_tensor(name).float(), p.detach()
            changed += bool((w != w0).any())
            for n in refs:
                ref = own(name, w0) if refs[n] == "own" else files[n].get_tensor(name).float()
                acc[n][0] += float((w - ref).double().pow(2).sum())
                acc[n][1] += float((ref - w0).double().pow(2).sum())
    restored = all(torch.equal(unet.get_parameter(n), base.get_tensor(n).float()) for n in hit)
    out = {n: (a / b) ** 0.5 if b else None for n, (a, b) in acc.items()}
    return {**out, "lora_layers": len(patch.layers), "layers": len(hit), "unmatched": len(miss),
            "unmatched_keys": miss[:8], "changed_weights": changed, "restored": restored}

rows = []
for row in spec["rows"]:
    r = {}
    try:
        res = ModelConfigFactory.from_model_on_disk(row["path"], allow_unknown=True)
        c = res.config
        r["invoke"] = {"type": c.type.value, "base": c.base.value, "format": c.format.value}
        if c.type.value == "unknown":
            r["invoke"]["why"] = {k: repr(v)[:200] for k, v in res.details.items() if "SD1" in k}
        elif row["refs"]:
            r.update(check(c, row["refs"]))
    except Exception as e:
        r["error"] = f"{type(e).__name__}: {e}"[:2000]
    rows.append(r)
    print(row["path"], json.dumps(r), flush=True)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
"""


def sh(cmd: list, log: Path | None = None, **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd))[:160].replace("\n", " "), flush=True)
    with open(log or os.devnull, "a") as f:
        return subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, **kw)


def du_mb(p: Path) -> float:
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and not f.is_symlink()]
    return round(sum(f.stat().st_size for f in files) / 2**20, 1)


def make_venv(v: Path, work: Path) -> dict:
    marker = v / "unitune-interop.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    t = time.perf_counter()
    shutil.rmtree(v, ignore_errors=True)
    log = work / "venv.log"
    sh([sys.executable, "-m", "venv", "--system-site-packages", v], log, check=True)
    sh([v / "bin/pip", "install", "--no-deps", *PKGS], log, check=True)
    stub = v / "placeholders" / "torchvision"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(STUB)
    site = next((v / "lib").glob("python*/site-packages"))
    (site / "zz_unitune_placeholders.pth").write_text(f"{v / 'placeholders'}\n")
    info = {"install_s": round(time.perf_counter() - t, 1), "venv_mb": du_mb(v)}
    marker.write_text(json.dumps(info))
    return info


BUILD = """import shutil, sys, torch
from diffusers import StableDiffusionPipeline
from unitune.backbones.random_weights import build
f32 = build("sd15", sys.argv[1])
pipe = StableDiffusionPipeline.from_pretrained(f32, torch_dtype=torch.float16,
    safety_checker=None, requires_safety_checker=False)
pipe.save_pretrained(sys.argv[2])
shutil.rmtree(f32)
"""


def make_model(work: Path) -> Path:
    f16 = work / "sd15-fp16"
    if not (f16 / "done").is_file():
        shutil.rmtree(f16, ignore_errors=True)
        sh([sys.executable, "-c", BUILD, work / "sd15-fp32", f16], work / "build.log", check=True)
        (f16 / "done").write_text("random sd15 (unitune.backbones.random_weights), fp16\n")
    return f16


def make_tune(work: Path, model: Path, photo: Path, method: str) -> dict:
    out, done = work / f"tune-{method}", work / f"tune-{method}.json"
    if done.is_file() and (out / "checkpoints" / "step-000002.safetensors").is_file():
        return {**json.loads(done.read_text()), "reused": True}
    cmd = ["unitune", "tune", photo, "--out", out, "--model", model, "--method", method]
    cmd += ["--steps", "2", "--save-at", "2", "--resolution", "64", "--batch-size", "1"]
    t = time.perf_counter()
    if sh([*cmd, "--device", "cpu", "--quiet", "--overwrite"], work / f"{out.name}.log").returncode:
        raise SystemExit(f"unitune tune --method {method} failed: see {out}.log")
    info = {"tune_s": round(time.perf_counter() - t, 1), "steps": 2, "resolution": 64}
    done.write_text(json.dumps(info))
    return info


def dtypes(path: Path) -> str:
    """The stored dtypes of the (largest) weight file: 'F16' or 'F16 (F32: 2)'."""
    files = [path] if path.is_file() else list(path.rglob("*.safetensors"))
    with open(max(files, key=lambda f: f.stat().st_size), "rb") as f:
        head = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    (top, _), *rest = Counter(
        v["dtype"] for k, v in head.items() if k != "__metadata__"
    ).most_common()
    return top + (f" ({', '.join(f'{d}: {c}' for d, c in rest)})" if rest else "")


def export(work: Path, fmt: str, tune: str, name: str, flags: list) -> dict:
    out = work / "exports" / name
    row = {"format": " ".join([fmt, *flags]), "tune": tune, "out": name}
    row["path_kind"] = "file" if name.endswith(".safetensors") else "folder"
    cmd = ["unitune", "export", work / f"tune-{tune}", "--format", fmt, "--out", out, *flags]
    cmd += ["--overwrite", "--device", "cpu", "--quiet"]
    tv = work / "time.txt"
    timed = ["/usr/bin/time", "-v", "-o", tv] if Path("/usr/bin/time").exists() else []
    log = work / "logs" / f"export-{name}.log"
    log.parent.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    t = time.perf_counter()
    p = sh([*timed, *cmd], log)
    row["export_s"] = round(time.perf_counter() - t, 1)
    if timed:
        rss = [ln for ln in tv.read_text().splitlines() if "Maximum resident" in ln]
        row["peak_rss_mb"] = round(int(rss[0].split(":")[1]) / 1024) if rss else None
    else:  # no /usr/bin/time: the largest child so far (RUSAGE_CHILDREN is a running max)
        row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    said = log.read_text().splitlines()
    if p.returncode:
        row["error"] = "\n".join(said[-15:])
        return row
    row["notes"] = [ln.removeprefix("unitune: note: ") for ln in said if "note:" in ln]
    row["size_mb"], row["dtype"] = du_mb(out), dtypes(out)
    return row


def check(work: Path, venv: Path, model: Path, rows: list) -> None:
    ok = [r for r in rows if "error" not in r]
    spec = {"base": str(model), "rows": []}
    for r in ok:
        refs = {} if r["format"].startswith("merged") else REFS[r["tune"]]
        refs = {n: p if p == "own" else str(work / "exports" / p) for n, p in refs.items()}
        spec["rows"].append({"path": str(work / "exports" / r["out"]), "refs": refs})
    (work / "check.json").write_text(json.dumps(spec))
    (work / "invoke_check.py").write_text(CHECKER)
    env = {**os.environ, "INVOKEAI_ROOT": str(work / "invokeai-root"), "TQDM_DISABLE": "1"}
    args = [venv / "bin/python", work / "invoke_check.py", work / "check.json", work / "res.json"]
    p = sh(args, work / "check.log", env=env)
    if p.returncode:
        raise SystemExit(f"the InvokeAI checker failed: see {work}/check.log")
    for r, res in zip(ok, json.loads((work / "res.json").read_text())):
        r.update(res)


def table(rows: list) -> str:
    cols = ["format", "tune", "path_kind", "export_s", "peak_rss_mb", "size_mb", "dtype"]
    cols += ["invoke", "layers", "unmatched", "rel_error", "rel_error_vs_*"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        second = [v for k, v in r.items() if k.startswith("rel_error_vs")]
        v = {**r, "rel_error_vs_*": second[0] if second else None}
        v["invoke"] = "/".join(r["invoke"].values()) if "invoke" in r else None
        cells = [f"{v[c]:.3g}" if "rel" in c and v.get(c) is not None else v.get(c) for c in cols]
        cells = ["" if c is None else str(c) for c in cells]
        if "error" in r:
            cells[-2] = "ERROR: " + r["error"].splitlines()[-1][:80]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/unitune-interop"))
    ap.add_argument("--venv", type=Path, default=Path("/tmp/unitune-invokeai-venv"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "interop_invokeai.json")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    photo = a.work / "chelsea.png"
    if not photo.is_file():
        from PIL import Image
        from skimage import data

        Image.fromarray(data.chelsea()).save(photo)
    venv = make_venv(a.venv, a.work)
    model = make_model(a.work)
    tunes = {m: make_tune(a.work, model, photo, m) for m in ("lora", "full")}
    rows = [export(a.work, *e) for e in EXPORTS]
    check(a.work, a.venv, model, rows)
    doc = {"date": datetime.date.today().isoformat(), "invokeai": INVOKEAI}
    doc |= {"torch": version("torch"), "diffusers": version("diffusers"), **venv}
    doc |= {"torchvision": TORCHVISION, "model": "sd15 random fp16", "tunes": tunes}
    doc["rel_error"] = (
        "||W_invoke - W_ref|| / ||W_ref - W_base|| over the UNet (fp32); W_ref: the lora tune's "
        "--dtype fp32 merged folder; for the full tune's rank-8 LoRAs, base + the file's own "
        "(alpha/r) B A (rel_error_vs_merged: vs its fp32 merged folder)"
    )
    doc |= {"total_s": round(time.perf_counter() - t0, 1), "exports": rows}
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))
    print(f"total {doc['total_s']} s; wrote {a.out}")


if __name__ == "__main__":
    main()
