"""Rebuild the CLIP BPE tokenizer files offline from the open-clip-torch wheel.

OpenAI's CLIP ships its byte-pair merges as ``bpe_simple_vocab_16e6.txt.gz``; open-clip-torch
carries the same file. Hugging Face's ``CLIPTokenizer`` wants ``vocab.json`` + ``merges.txt``
instead. The vocabulary is fully determined by the merges (256 byte symbols, the same with the
end-of-word marker, one token per merge, then the two special tokens), so both files can be
rebuilt without any download. The result is shipped once, as the embedded model's tokenizer
(``unitune/assets/world-model/tokenizer``), which is also the CLIP tokenizer the tests' tiny models
use.

    python -m unitune.clip_vocab [PATH_TO_WHEEL_OR_GZ] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import zipfile
from pathlib import Path

GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges so the vocab ends at 49408
ASSET_DIR = Path(__file__).parent / "assets" / "world-model" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (printable bytes map to themselves)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def read_bpe_gz(source: str | os.PathLike | None = None) -> bytes:
    """Raw bytes of the gz merges file from a .gz path, an open-clip wheel, or the installed
    package."""
    if source is None:
        spec = importlib.util.find_spec("open_clip")  # locates without importing (no torchvision)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "open-clip-torch is not installed: `pip install --no-deps open-clip-torch` "
                "or pass the wheel / .gz path"
            )
        source = Path(list(spec.submodule_search_locations)[0]) / GZ_NAME
    source = Path(source)
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as zf:
            return zf.read(f"open_clip/{GZ_NAME}")
    return source.read_bytes()


def build_vocab(gz_bytes: bytes) -> tuple[dict[str, int], list[str]]:
    """(vocab token -> id, merge lines) exactly as CLIP's SimpleTokenizer orders them."""
    lines = gzip.decompress(gz_bytes).decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]  # first line is a version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(gz_bytes: bytes, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(gz_bytes)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out


def load_clip_tokenizer(path: str | os.PathLike | None = None):
    """A real CLIP tokenizer (49,408 tokens, 77 max length) from the shipped files."""
    from transformers import CLIPTokenizer

    d = Path(path) if path is not None else ASSET_DIR
    # from_pretrained reads vocab.json + merges.txt on both transformers 4.x and 5.x
    return CLIPTokenizer.from_pretrained(str(d), model_max_length=77)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "source", nargs="?", help="open-clip-torch wheel or bpe .gz (default: installed)"
    )
    ap.add_argument("--out", default=str(ASSET_DIR))
    args = ap.parse_args(argv)
    out = write_tokenizer_files(read_bpe_gz(args.source), args.out)
    print(f"wrote {out / 'vocab.json'} and {out / 'merges.txt'}")


if __name__ == "__main__":
    main()
