"""Labelled contact sheets (the paper's figure-10 view: checkpoints x t0)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_w(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    x1, _, x2, _ = draw.textbbox((0, 0), text, font=font)
    return x2 - x1


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a single word wider than that keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and _text_w(draw, trial, font) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def contact_sheet(
    cells: list[list[Image.Image | None]],
    row_labels: list[str],
    col_labels: list[str],
    row_title: str = "",
    col_title: str = "",
    title: str = "",
    cell_size: int = 128,
    pad: int = 4,
) -> Image.Image:
    """Rows x columns of images with labels on the left and on top; None leaves a blank cell.

    Cells are resized to cell_size (nearest-neighbour when upscaling, so small-model pixels
    stay visible as pixels). The title wraps to the grid's width, so the picture is the grid.
    """
    n_rows, n_cols = len(cells), max((len(r) for r in cells), default=0)
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ValueError("one label per row and per column")
    fs = max(11, cell_size // 9)
    font, big = _font(fs), _font(fs + 3)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([_text_w(probe, s, font) for s in row_labels] + [0]) + 2 * pad
    side = (fs + 2 * pad) if row_title else 0
    W = side + label_w + n_cols * (cell_size + pad) + pad
    title_lines = wrap(probe, title, big, W - 2 * pad)
    W = max([W] + [_text_w(probe, ln, big) + 2 * pad for ln in title_lines])
    line_h = fs + 2 * pad
    top = line_h * (1 + bool(col_title)) + (fs + 3 + pad) * len(title_lines) + pad * bool(title)
    H = top + n_rows * (cell_size + pad) + pad
    sheet = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(sheet)
    x0 = side + label_w
    y = pad
    for ln in title_lines:
        d.text((pad, y), ln, fill="black", font=big)
        y += fs + 3 + pad
    if title:
        y += pad
    if col_title:
        grid_w = n_cols * (cell_size + pad)
        d.text((x0 + (grid_w - _text_w(d, col_title, font)) // 2, y), col_title, "dimgray", font)
        y += fs + 2 * pad
    for j, lab in enumerate(col_labels):
        cx = x0 + j * (cell_size + pad) + (cell_size - _text_w(d, lab, font)) // 2
        d.text((cx, y), lab, fill="black", font=font)
    if row_title:  # vertical axis title, rotated
        tw = _text_w(d, row_title, font)
        strip = Image.new("RGB", (tw + 2 * pad, fs + 2 * pad), "white")
        ImageDraw.Draw(strip).text((pad, pad // 2), row_title, fill="dimgray", font=font)
        strip = strip.rotate(90, expand=True)
        grid_h = n_rows * (cell_size + pad)
        sheet.paste(strip, (0, top + max(0, (grid_h - strip.height) // 2)))
    for i, row in enumerate(cells):
        cy = top + i * (cell_size + pad)
        d.text((side + pad, cy + cell_size // 2 - fs // 2), row_labels[i], fill="black", font=font)
        for j, im in enumerate(row):
            if im is None:
                continue
            s = cell_size / max(im.size)
            size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
            rs = Image.Resampling.NEAREST if s >= 1 else Image.Resampling.LANCZOS
            sheet.paste(im.convert("RGB").resize(size, rs), (x0 + j * (cell_size + pad), cy))
    return sheet
