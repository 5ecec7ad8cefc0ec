"""topics.html: one self-contained page (inline CSS and SVG, no script, nothing fetched): the map of documents
coloured by topic, then each topic's terms and most representative documents, then the quality figures.

Every value from the data is HTML-escaped. The page borrows the report's stylesheet so both look alike.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from adaptlab.reporting.markup import clip, esc, fmt

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
#: tab10, then its lighter partners (tab20), greys swapped for tab20b colours (grey is for outliers); beyond 20
#: topics, hues spread by the golden angle.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#393b79", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#637939",
           "#dbdb8d", "#9edae5")
OUTLIER = "#c9ced3"
WIDTH, HEIGHT, PAD = 960, 520, 24
EXTRA_CSS = """
figure.map svg { width: 100%; max-width: 1040px; height: auto; display: block; background: #fbfcfd; }
g.topic circle { stroke: #fff; stroke-width: .4; }
g.outliers circle { opacity: .55; }
svg:has(g.topic:hover) g.topic:not(:hover) { opacity: .18; }
text.topic-label { font: 600 13px system-ui, sans-serif; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
ul.legend { list-style: none; padding: 0; columns: 2 360px; font-size: 13px; }
ul.legend li { margin: 2px 0; break-inside: avoid; }
.topic-card { border: 1px solid var(--line); border-radius: 8px; padding: 6px 14px 10px; margin: 12px 0; }
.topic-card h3 { margin: 8px 0 6px; }
.terms { display: flex; flex-wrap: wrap; gap: 6px; margin: 4px 0 8px; padding: 0; list-style: none; }
.terms li { border: 1px solid var(--line); border-radius: 12px; padding: 1px 9px; background: #f6f8fa; }
.terms li small { color: var(--muted); margin-left: 4px; }
.docs li { margin: 3px 0; }
.figures td.num { min-width: 90px; }
"""


def colour(topic: int) -> str:
    if topic < 0:
        return OUTLIER
    if topic < len(PALETTE):
        return PALETTE[topic]
    return f"hsl({(topic * 137.508) % 360:.1f}, 62%, 48%)"


def render_page(record: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The whole page for a topics.json ``record`` and its document ``rows``."""
    title = f"Topics in {record['corpus']['source']}"
    body = "".join([_header(record, title), _map_section(record, rows), _topics_section(record),
                    _quality_section(record), _settings_section(record)])
    css = resources.files("adaptlab.reporting").joinpath("assets", "report.css").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name=viewport content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{esc(title)} · adaptlab topics</title><style>{css}{EXTRA_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _header(record: dict[str, Any], title: str) -> str:
    c, e, q = record["corpus"], record["embedding"], record["quality"]
    embedding = e.get("run_dir") or e.get("model") or "-"
    split = {None: "", "all": " (train + validation + test)"}.get(c.get("split"), f" ({esc(c.get('split'))} split)")
    return (
        f"<header><h1>{esc(title)}</h1><p class=meta>{c['documents']} documents{split}, column "
        f"<code>{esc(c['text_column'])}</code> · embedding <b>{esc(embedding)}</b> ({esc(e.get('kind'))}) · "
        f"<b>{record['topic_count']}</b> topics, {record['outliers']} outliers · NPMI <b>{fmt(q['npmi'])}</b> · "
        f"diversity <b>{fmt(q['diversity'])}</b> (top {q['top_k']} terms, {esc(q['terms'])}) · "
        f"{fmt(record['seconds'].get('total'), 1)} s</p></header>"
    )


def _map_section(record: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    names = {t["id"]: ", ".join(x["term"] for x in t["terms"][:3]) for t in record["topics"]}
    legend = "".join(
        f'<li data-topic="{t["id"]}"><span class="swatch" style="background:{colour(t["id"])}"></span>'
        f'<b>{t["id"]}</b> ({t["size"]}): {esc(names[t["id"]])}</li>' for t in record["topics"])
    if record["outliers"]:
        legend += (f'<li data-topic="-1"><span class="swatch" style="background:{OUTLIER}"></span>outliers '
                   f'({record["outliers"]}): in no topic</li>')
    reducer = esc(record["settings"]["reducer"].upper())
    caption = (f"Each dot is a document, placed by a 2-D {reducer} of its embedding and coloured by its topic; "
               "hover a dot for its text, a colour to pick out its topic.")
    return (f'<section id="map"><h2>Map</h2><figure class="chart map" id="topic-map">{_svg(rows, names)}'
            f'<figcaption>{caption}</figcaption></figure><ul class="legend">{legend}</ul></section>')


def _svg(rows: list[dict[str, Any]], names: dict[int, str]) -> str:
    xs, ys = [r["x"] for r in rows], [r["y"] for r in rows]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def px(x: float) -> float:
        return PAD + (x - x0) / ((x1 - x0) or 1.0) * (WIDTH - 2 * PAD)

    def py(y: float) -> float:
        return HEIGHT - PAD - (y - y0) / ((y1 - y0) or 1.0) * (HEIGHT - 2 * PAD)

    radius = 3.2 if len(rows) <= 500 else 2.4
    groups: dict[int, list[str]] = {}
    for r in rows:
        tip = f"topic {r['topic']} · row {r['row']}: {clip(r['text'], 160)}"
        groups.setdefault(r["topic"], []).append(
            f'<circle cx="{px(r["x"]):.1f}" cy="{py(r["y"]):.1f}" r="{radius}"><title>{esc(tip)}</title></circle>')
    parts = []
    for topic in sorted(groups):  # outliers (-1) first, underneath
        cls = "outliers" if topic < 0 else "topic"
        parts.append(f'<g class="{cls}" data-topic="{topic}" fill="{colour(topic)}">{"".join(groups[topic])}</g>')
    for topic in sorted(t for t in groups if t >= 0):  # each topic's id at the median of its points
        points = [r for r in rows if r["topic"] == topic]
        mx = sorted(px(r["x"]) for r in points)[len(points) // 2]
        my = sorted(py(r["y"]) for r in points)[len(points) // 2]
        parts.append(f'<text class="topic-label" x="{mx:.1f}" y="{my:.1f}" text-anchor="middle" '
                     f'fill="{colour(topic)}"><title>{esc(names.get(topic, ""))}</title>{topic}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="map of {len(rows)} documents coloured by topic">{"".join(parts)}</svg>')


def _topics_section(record: dict[str, Any]) -> str:
    if not record["topics"]:
        return ('<section id="topics"><h2>Topics</h2><p class="note">No topic found: every document is an outlier. '
                "Lower --min-topic-size or add documents.</p></section>")
    return f'<section id="topics"><h2>Topics</h2>{"".join(_topic_card(t) for t in record["topics"])}</section>'


def _topic_card(t: dict[str, Any]) -> str:
    terms = "".join(f"<li>{esc(x['term'])}<small>{fmt(x['weight'], 2)}</small></li>" for x in t["terms"])
    ctfidf = ", ".join(esc(x["term"]) for x in t["ctfidf_terms"])
    docs = "".join(
        f"<li><span class=meta>row {esc(d['row'])}{' · ' + esc(d['split']) if d.get('split') else ''}</span> "
        f"{esc(clip(d['text'], 400))}</li>" for d in t["representative_documents"])
    return (
        f'<article class="topic-card" id="topic-{t["id"]}" data-topic="{t["id"]}"><h3><span class="swatch" '
        f'style="background:{colour(t["id"])}"></span>Topic {t["id"]} · {t["size"]} documents '
        f'({fmt(100 * t["share"], 1)}%) · NPMI {fmt(t["npmi"])}</h3><ul class="terms">{terms}</ul>'
        f"<details><summary>c-TF-IDF terms</summary><p>{ctfidf}</p></details>"
        "<p class=meta>Representative documents (nearest the topic's mean embedding):</p>"
        f'<ul class="docs">{docs}</ul>'
        "</article>"
    )


def _quality_section(record: dict[str, Any]) -> str:
    rows = []
    for key in ("quality", "quality_ctfidf"):
        q = record[key]
        rows.append(f"<tr><td>{esc(q['terms'])} terms</td><td class=num>{fmt(q['npmi'])}</td>"
                    f"<td class=num>{fmt(q['diversity'])}</td><td class=num>{q['top_k']}</td></tr>")
    head = "<tr><th>terms</th><th class=num>NPMI</th><th class=num>diversity</th><th class=num>top k</th></tr>"
    return (f'<section id="quality"><h2>Quality</h2><table class="figures"><thead>{head}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="note">{esc(record["quality_definition"])}</p></section>')


def _settings_section(record: dict[str, Any]) -> str:
    items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in record["settings"].items())
    secs = ", ".join(f"{esc(k)} {fmt(v, 1)} s" for k, v in record["seconds"].items())
    prov = record["provenance"]
    return (f'<section id="settings"><h2>Settings and provenance</h2><ul>{items}</ul><p class="note">Time: {secs}. '
            f"Data sha256 {esc(record['corpus']['data_sha256'][:16])}…, git {esc(prov.get('git_revision'))}, "
            f"{esc(', '.join(f'{k} {v}' for k, v in prov['packages'].items()))}.</p></section>")
