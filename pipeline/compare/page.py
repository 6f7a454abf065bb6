"""The comparison page: one HTML file holding every clip (WAV) and spectrogram (PNG) as base64 data URIs.

Nothing on it is fetched: no script, no font, no stylesheet from elsewhere, and a Content-Security-Policy
that forbids any request but ``data:``. It lays out in one column on a phone and follows the reader's
light or dark theme (``prefers-color-scheme``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

import numpy as np

from pipeline.registry.serving import wav_base64
from pipeline.tracking.previews import spectrogram_png

CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"
STYLE = """
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1b1f; --muted: #5d5d66; --card: #f3f3f6; --line: #d8d8de;
        --a: #1f6fd1; --b: #c2410c; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #121216; --fg: #e8e8ee; --muted: #a2a2ad; --card: #1f1f26; --line: #34343d;
          --a: #7fb2ff; --b: #ffa574; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 1rem; max-width: 64rem; background: var(--bg); color: var(--fg);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; overflow-wrap: anywhere; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: .95rem; margin: 0 0 .4rem; color: var(--muted); }
.note { color: var(--muted); font-size: .85rem; }
.table { overflow-x: auto; } table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { overflow-wrap: normal; }
.row { background: var(--card); border-radius: .5rem; padding: .6rem; margin: .6rem 0; }
.pair { display: grid; gap: .6rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 15rem), 1fr)); }
figure { margin: 0; min-width: 0; }
figcaption { font-weight: 600; font-size: .85rem; margin-bottom: .2rem; }
figcaption.a { color: var(--a); } figcaption.b { color: var(--b); }
audio { width: 100%; display: block; }
img { width: 100%; height: 5rem; display: block; margin-top: .3rem; border-radius: .25rem; image-rendering: auto; }
"""


@dataclass
class Clip:
    """One clip on the page: the audio and its spectrogram, both base64."""

    wav: str
    png: str

    @classmethod
    def of(cls, audio: np.ndarray, sample_rate: int) -> Clip:
        """(channels, samples) floats -> a 16-bit WAV and the spectrogram of its first channel."""
        return cls(wav_base64(audio, sample_rate), base64.b64encode(spectrogram_png(audio[0], sample_rate)).decode())


@dataclass
class Row:
    heading: str
    a: Clip
    b: Clip


def figure(clip: Clip, caption: str, css_class: str = "") -> str:
    return (f'<figure><figcaption class="{css_class}">{escape(caption)}</figcaption>'
            f'<audio controls preload="auto" src="data:audio/wav;base64,{clip.wav}"></audio>'
            f'<img alt="spectrogram of {escape(caption)}" src="data:image/png;base64,{clip.png}"></figure>')


def render(title: str, header: list[tuple[str, str, str]], groups: list[tuple[str | None, list[Row]]],
           reference: list[tuple[str, Clip]], note: str, names: tuple[str, str] = ("A", "B"),
           swapped: list[bool] | None = None) -> str:
    """The page. ``header``: (field, A's value, B's value) lines; ``groups``: rows under an optional heading
    (a label name); ``reference``: (caption, clip) of real clips; ``names``: the captions of A's and B's clips;
    ``swapped``: blind mode, one flag per row (in order) saying whether B's clip goes first; the clips are
    then captioned 1 and 2 only."""
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(a)}</td><td>{escape(b)}</td></tr>" for k, a, b in header)
    parts = [f'<h1>{escape(title)}</h1><p class="note">{escape(note)}</p>',
             f'<div class="table"><table><thead><tr><th></th><th>A</th><th>B</th></tr></thead>'
             f'<tbody>{table}</tbody></table></div>']
    flags = iter(swapped or [])
    for heading, rows in groups:
        if heading is not None:
            parts.append(f"<h2>{escape(heading)}</h2>")
        for row in rows:
            if swapped is None:
                cells = figure(row.a, names[0], "a") + figure(row.b, names[1], "b")
            else:
                first, second = (row.b, row.a) if next(flags) else (row.a, row.b)
                cells = figure(first, "1") + figure(second, "2")
            parts.append(f'<section class="row"><h3>{escape(row.heading)}</h3>'
                         f'<div class="pair">{cells}</div></section>')
    if reference:
        parts.append('<h2>Real clips (training shards)</h2><div class="pair">')
        parts.extend(f'<div class="row">{figure(clip, caption)}</div>' for caption, clip in reference)
        parts.append("</div>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>{''.join(parts)}</body></html>\n")
