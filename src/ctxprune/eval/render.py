"""The report's two formats, rendered from one list of blocks so that they always say the same thing:
self-contained HTML (PNGs inlined as data URIs) and Markdown that links the PNG files."""

from __future__ import annotations

import base64
import html

# ("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", file, alt) | ("targets", targets)
Block = tuple

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:.8em 0}
li{margin:.4em 0}.met{color:#08702a}.notmet{color:#b00020}.na{color:#777}
"""


def _verdict(met: bool | None) -> tuple[str, str]:
    return {True: ("MET", "met"), False: ("NOT MET", "notmet"), None: ("NOT MEASURED", "na")}[met]


def render_html(title: str, blocks: list[Block], pngs: dict[str, bytes]) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(pngs[b[1]]).decode()
            body.append(f'<img alt="{e(b[2])}" src="data:image/png;base64,{data}">')
        elif b[0] == "targets":
            items = []
            for t in b[1]:
                word, cls = _verdict(t["met"])
                items.append(f'<li><b class="{cls}">{word}</b> <b>{e(t["name"])}</b>: {e(t["detail"])}</li>')
            body.append("<ul>" + "".join(items) + "</ul>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"{'#' * b[1]} {b[2]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            lines = ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b[2]]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif b[0] == "targets":
            out.append("\n".join(f"- **{_verdict(t['met'])[0]}** `{t['name']}`: {t['detail']}" for t in b[1]))
    return "\n\n".join(out) + "\n"
