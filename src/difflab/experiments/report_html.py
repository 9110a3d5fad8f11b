"""The page of `difflab report` (experiments/report.py): escaped text, tables, inline images, the figures, the style.

Everything is static: one file, a small CSS block, images as base64 `data:` URIs, no JavaScript and no external
resource, so the page opens from disk in any browser and can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import struct
from pathlib import Path

from difflab.experiments.plots import CURVE_KEYS, CURVE_LABELS


class Html(str):
    """Markup that is already safe (built here); every other value is escaped when it is put in the page."""


def esc(value) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts) -> Html:
    return Html("".join(esc(p) for p in parts))


def fmt(v) -> str:
    """A value as a reader wants it: 4 decimals for ordinary floats (as `difflab eval` prints them), %g for tiny/huge ones."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        return f"{v:.4f}" if 1e-3 <= abs(v) < 1e5 else f"{v:.4g}"
    if isinstance(v, (list, tuple, dict)):
        text = json.dumps(v, separators=(", ", ": "))
        return text if len(text) <= 160 else text[:157] + "..."
    return str(v)


def cell(v, tag: str = "td", cls: str = "") -> Html:
    """One table cell; a float keeps its exact value in the tooltip (the title attribute)."""
    attrs = f' class="{cls}"' if cls else ""
    if isinstance(v, float) and not isinstance(v, bool):
        attrs += f' title="{esc(repr(v))}"'
    if isinstance(v, (int, float, NumHtml)) and not isinstance(v, bool):
        attrs += ' data-num=""'
    return Html(f"<{tag}{attrs}>{esc(v if isinstance(v, Html) else fmt(v))}</{tag}>")


class NumHtml(Html):
    """Markup of a number (right-aligned like one)."""


def num(value, spec: str) -> Html:
    """A number with its own format spec (e.g. '.1f' for images/s, 'g' for a guidance scale), the exact value in the tooltip."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return esc(fmt(value))
    return NumHtml(f'<span title="{esc(repr(value))}">{esc(format(value, spec))}</span>')


def plus_minus(value, std) -> Html:
    """'0.0021 ± 0.0158', the exact value in the tooltip."""
    return NumHtml(f'<span title="{esc(repr(value))}">{esc(fmt(value))}</span> ± {esc(fmt(std))}')


def table(head: list, rows: list[list], *, caption=None, cls: str = "", row_classes: list[str] | None = None) -> Html:
    """A table in a horizontally scrolling box; `rows` hold values (formatted by fmt) or Html."""
    parts = [f'<div class="tbl"><table class="{esc(cls)}">']
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(cell(h if isinstance(h, Html) else str(h), "th") for h in head) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        rc = (row_classes or [])[i] if row_classes and i < len(row_classes) else ""
        parts.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        parts.append("".join(cell(v, "th" if j == 0 else "td") for j, v in enumerate(row)))
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return Html("".join(parts))


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; (0, 0) when the bytes are not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return struct.unpack(">II", data[16:24])


def img(data: bytes, alt: str, *, pixel: bool = False, min_width: int = 0) -> Html:
    """An inline PNG. `pixel`: a grid of tiny images, drawn with hard pixel edges and enlarged 2x when small."""
    w, h = png_size(data)
    size = ""
    if pixel and w and w < min_width:
        k = math.ceil(min_width / w)
        size = f' width="{w * k}" height="{h * k}"'
    elif w:
        size = f' width="{w}" height="{h}"'
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Html(f'<img class="{"pixel" if pixel else "plot"}" src="{src}" alt="{esc(alt)}"{size}>')


def figure(data: bytes, caption, *, pixel: bool = False, min_width: int = 0) -> Html:
    return Html(f"<figure>{img(data, str(caption), pixel=pixel, min_width=min_width)}<figcaption>{esc(caption)}</figcaption></figure>")


def chain(data: bytes, col_labels: list[str], row_labels: list[str], caption: str) -> Html:
    """A grid image with its column labels above and its row labels to the left (the cells are equal, so 1fr tracks align)."""
    head = "".join(f"<span>{esc(c)}</span>" for c in col_labels)
    side = "".join(f"<span>{esc(r)}</span>" for r in row_labels)
    return Html(f'<figure class="chain"><div class="chain-grid"><span></span><div class="chain-cols" style="--k:{len(col_labels)}">{head}</div>'
                f'<div class="chain-rows" style="--r:{len(row_labels)}">{side}</div>{img(data, caption, pixel=True, min_width=480)}</div>'
                f"<figcaption>{esc(caption)}</figcaption></figure>")


def gallery(items: list[Html]) -> Html:
    return Html('<div class="gallery">' + "".join(items) + "</div>")


def columns(blocks: list[tuple[str, Html]]) -> Html:
    """One column per run, side by side (stacked on a narrow screen); a single run takes the full width."""
    if len(blocks) == 1:
        return blocks[0][1]
    cols = "".join(f'<div class="col"><h4 class="runname">{esc(name)}</h4>{body}</div>' for name, body in blocks)
    return Html(f'<div class="cols" style="--n:{len(blocks)}">{cols}</div>')


def rich(text) -> Html:
    """Escaped text in which `backticked` spans are set as code (commands a reader may copy)."""
    if isinstance(text, Html):
        return text
    pieces = str(text).split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick: plain text
        return esc(text)
    return Html("".join(f"<code>{esc(p)}</code>" if i % 2 else esc(p) for i, p in enumerate(pieces)))


def note(text) -> Html:
    return Html(f'<p class="note">{rich(text)}</p>')


def para(text) -> Html:
    return Html(f"<p>{rich(text)}</p>")


def code(text) -> Html:
    return Html(f"<code>{esc(text)}</code>")


def section(anchor: str, title: str, intro, body: Html) -> Html:
    intro_html = Html(f'<p class="intro">{rich(intro)}</p>') if intro else ""
    return Html(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{intro_html}{body}</section>')


def sub(title, body: Html, source: str | None = None) -> Html:
    src = Html(f' <span class="src">{esc(source)}</span>') if source else ""
    return Html(f"<h3>{esc(title)}{src}</h3>{body}")


CSS = """
:root { --fg: #1d232b; --muted: #5b6570; --line: #d8dde3; --bg: #ffffff; --soft: #f4f6f8; --accent: #2458a6; --diff: #fff4d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; color: var(--muted); }
nav { padding: 8px 28px; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
main { padding: 6px 28px 40px; max-width: 1800px; }
section { margin-top: 22px; }
h2 { font-size: 18px; margin: 18px 0 6px; padding-bottom: 3px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
h4.runname { font-size: 14px; margin: 4px 0 6px; color: var(--accent); }
.src { font-weight: normal; font-size: 12px; color: var(--muted); font-family: ui-monospace, monospace; }
.intro, .note { color: var(--muted); max-width: 70em; margin: 4px 0 8px; }
.note { font-style: italic; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; background: var(--soft); padding: 0 3px; border-radius: 3px; }
.tbl { overflow-x: auto; margin: 6px 0 12px; }
table { border-collapse: collapse; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 2px 0 4px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); position: sticky; top: 0; }
tbody th { font-weight: 500; background: #fafbfc; white-space: nowrap; }
td[data-num] { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; font-size: 12.5px; }
tr.diff td, tr.diff th { background: var(--diff); }
tr.floor td, tr.floor th { color: var(--muted); font-style: italic; }
.cfg { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 4px 18px; align-items: start; }
.cfg .tbl { margin: 0; }
.cfg table { width: 100%; }
.cols { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 22px; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-end; }
figure { margin: 4px 0; }
figcaption { font-size: 12px; color: var(--muted); text-align: center; }
img { max-width: 100%; height: auto; display: block; }
img.pixel { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid var(--line); }
img.plot { border: 1px solid var(--soft); }
.chain-grid { display: inline-grid; grid-template-columns: auto auto; gap: 2px 6px; font-size: 11px; color: var(--muted); }
.chain-cols { display: grid; grid-template-columns: repeat(var(--k), 1fr); text-align: center; }
.chain-rows { display: grid; grid-template-rows: repeat(var(--r), 1fr); text-align: right; white-space: nowrap; }
.chain-rows span { display: flex; align-items: center; justify-content: flex-end; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--accent); }
ul.files { font-family: ui-monospace, monospace; font-size: 12.5px; margin: 4px 0; }
"""


def page(title: str, subtitle: list, nav: list[tuple[str, str]], sections: list[Html]) -> str:
    """The whole document. `data:,` as the icon keeps the browser from asking the disk for a favicon."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    sub_html = "".join(f"<p>{rich(s)}</p>" for s in subtitle)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head>\n"
            f"<body><header><h1>{esc(title)}</h1>{sub_html}</header><nav>{links}</nav><main>\n"
            + "\n".join(sections) + "\n</main></body></html>\n")


# ----- figures (matplotlib's object API, PNG bytes) -----------------------------------------------------------

def _figure(ncols: int, size=(4.6, 3.3)):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(size[0] * ncols, size[1]))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _smooth(v: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x - (v[i - k] if i >= k else 0.0)
        out.append(acc / min(i + 1, k))
    return out


def plot_curves(runs: list) -> bytes | None:
    """Loss (each kind's terms), gradient norm and learning rate against the step; several runs on the same axes."""
    panels = []
    for title, keys_of in (("training loss", lambda r: CURVE_KEYS.get(r.kind, ("loss",))),
                           ("gradient norm (before clipping)", lambda r: sorted({k for row in r.rows for k in row if k.startswith("grad_norm")})),
                           ("learning rate", lambda r: ("lr",))):
        lines = []
        for i, r in enumerate(runs):
            for j, key in enumerate(keys_of(r)):
                pts = [(row["step"], row[key]) for row in r.rows if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
                if pts:
                    label = CURVE_LABELS.get(key, key) if key != "lr" else "lr"
                    lines.append((f"{r.name}: {label}" if len(runs) > 1 else label, i, j, pts))
        if lines:
            panels.append((title, lines))
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (title, lines) in zip(axes, panels):
        for label, i, j, pts in lines:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            style = dict(color=f"C{i if len(runs) > 1 else j}", ls=("-", "--", ":", "-.")[j % 4] if len(runs) > 1 else "-")
            if len(ys) > 60:
                ax.plot(xs, ys, lw=0.6, alpha=0.3, **style)
                ys = _smooth(ys, max(2, len(ys) // 30))
            ax.plot(xs, ys, lw=1.3, label=label, marker="o" if len(ys) < 12 else None, ms=3, **style)
        vals = [y for *_, pts in lines for _, y in pts]
        if title != "learning rate" and vals and min(vals) > 0 and max(vals) / min(vals) > 5:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
    return _png(fig)


def plot_fid_vs_nfe(points: list[tuple[str, int, float]], floors: list[tuple[str, float]]) -> bytes | None:
    """FID against network evaluations per image (log), one line per series; dashed: real-data floors."""
    if len({nfe for _, nfe, _ in points}) < 2:
        return None
    fig, (ax,) = _figure(1, (6.4, 3.8))
    for series in dict.fromkeys(s for s, _, _ in points):
        pts = sorted((n, f) for s, n, f in points if s == series)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=series)
    for i, (label, fid) in enumerate(floors):
        ax.axhline(fid, color="gray", ls="--", lw=0.8, label=f"floor: {label}" if i < 4 else None)
    ax.set_xscale("log")
    if all(f > 0 for _, _, f in points):
        ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per image)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("FID vs NFE", fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_accuracy(curves: list[tuple[str, dict]]) -> bytes:
    fig, (ax,) = _figure(1, (6.0, 3.6))
    for label, d in curves:
        ax.plot([r["t"] for r in d["rows"]], [r["accuracy"] for r in d["rows"]], marker="o", ms=3, label=label)
    chance = {d.get("chance") for _, d in curves} - {None}
    for c in chance:
        ax.axhline(c, color="gray", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("timestep t (noise grows with t)")
    ax.set_ylabel("accuracy")
    ax.set_title("noise-aware classifier: held-out accuracy vs t", fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_ablation(report: dict) -> bytes | None:
    rows = [r for r in report["rows"] if r.get("stable") and isinstance(r.get("fid"), (int, float))]
    if not rows:
        return None
    panels = [("FID (lower is better)", "fid")] + ([("NLL bound (bits/dim)", "nll_bpd")] if all("nll_bpd" in r for r in rows) else [])
    fig, axes = _figure(len(panels), (max(4.0, 1.1 * len(rows)), 3.4))
    for ax, (title, key) in zip(axes, panels):
        ax.bar(range(len(rows)), [r[key] for r in rows], color=[f"C{i}" for i in range(len(rows))])
        ax.set_xticks(range(len(rows)), [r["cell"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=10)
    return _png(fig)


def via_file(plot, *args, tmp: Path) -> bytes:
    """The PNG of one of the experiments' own plot functions (they write a path): the same figure as their report."""
    out = tmp / f"plot-{len(os.listdir(tmp))}.png"
    plot(*args, out)
    return out.read_bytes()
