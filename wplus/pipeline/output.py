"""What `generate` writes: PNGs with the WebUI-style parameters text (read by the WebUI's PNG Info;
written by `wplus.generation.record`, the WebUI's own record) and labelled grids."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from wplus.generation.record import PNG_KEY


def save_png(image: Image.Image, path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, text)
    fmt = "PNG" if path.suffix.lower() == ".png" else None
    if fmt is None:
        image.save(path)  # other formats: no text chunk (the parameters are printed)
    else:
        image.save(path, format=fmt, pnginfo=info)
    return path


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def grid(cells: Sequence[Sequence[Image.Image]], col_labels: Sequence[str] = (), row_labels: Sequence[str] = (),
         captions: Sequence[Sequence[str]] | None = None) -> Image.Image:
    """Rows × columns of equal-size images with labels above the columns, left of the rows and
    a caption under each cell (e.g. its identity score)."""
    w, h = cells[0][0].size
    font_size = max(10, min(w, 512) // 20)
    font = _font(font_size)
    line = font_size + 6
    top = line if any(col_labels) else 0
    left = max((int(_text_width(font, t)) + 12 for t in row_labels), default=0) if any(row_labels) else 0
    under = line if captions else 0
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    out = Image.new("RGB", (left + n_cols * w, top + n_rows * (h + under)), "white")
    draw = ImageDraw.Draw(out)
    for j, label in enumerate(col_labels):
        draw.text((left + j * w + w // 2, top // 2), label, fill="black", font=font, anchor="mm")
    for i, row in enumerate(cells):
        y = top + i * (h + under)
        if i < len(row_labels):
            draw.text((left // 2, y + h // 2), row_labels[i], fill="black", font=font, anchor="mm")
        for j, img in enumerate(row):
            out.paste(img.convert("RGB"), (left + j * w, y))
            if captions:
                draw.text((left + j * w + w // 2, y + h + under // 2), captions[i][j], fill="black", font=font,
                          anchor="mm")
    return out


def _text_width(font, text: str) -> float:
    try:
        return font.getlength(text)
    except AttributeError:
        return font.getsize(text)[0]
