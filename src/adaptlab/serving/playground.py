"""The playground page served at ``/``: pick two models (two adapters, or base vs adapter), send one input, and
see both answers side by side. Plain HTML and fetch, no external assets (it works offline)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>adaptlab playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  .hint { color: #666; margin-top: 0; }
  textarea { width: 100%; min-height: 5rem; font: inherit; padding: .5rem; box-sizing: border-box; }
  .row { display: flex; gap: 1rem; margin: .8rem 0; align-items: center; flex-wrap: wrap; }
  .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .panel { border: 1px solid #ccc; border-radius: 6px; padding: .8rem; min-height: 6rem; }
  .panel h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .output { white-space: pre-wrap; word-break: break-word; }
  .label { font-weight: 600; font-size: 1.1rem; }
  .error { color: #b00020; }
  .meta { color: #666; font-size: .85rem; margin-top: .4rem; }
  button { font: inherit; padding: .4rem 1.2rem; }
  table { border-collapse: collapse; margin-top: .3rem; }
  td { padding: .1rem .6rem .1rem 0; }
</style>
</head>
<body>
<h1>adaptlab playground</h1>
<p class="hint">Same input, two models: compare the base model with an adapter, or two adapters.</p>
<div class="row">
  <label>left <select id="left"></select></label>
  <label>right <select id="right"></select></label>
  <label>max tokens <input id="max_tokens" type="number" value="32" min="1" style="width:5rem"></label>
</div>
<textarea id="prompt" placeholder="Type a review to classify, or a message for a chat model">
a gorgeous, witty, seductive movie</textarea>
<div class="row"><button id="send">Send to both</button><span id="status" class="meta"></span></div>
<div class="cols">
  <div class="panel"><h2 id="left-name">left</h2><div id="left-out" class="output"></div></div>
  <div class="panel"><h2 id="right-name">right</h2><div id="right-out" class="output"></div></div>
</div>
<script>
let models = {};
const $ = (id) => document.getElementById(id);

function esc(s) { const d = document.createElement('div'); d.textContent = String(s); return d.innerHTML; }

async function loadModels() {
  const r = await fetch('/v1/models');
  const body = await r.json();
  for (const m of body.data) models[m.id] = m;
  const ids = Object.keys(models);
  for (const side of ['left', 'right']) {
    const sel = $(side);
    sel.innerHTML = ids.map((id) => `<option value="${esc(id)}">${esc(id)} (${esc(models[id].task)})</option>`)
                       .join('');
  }
  $('left').value = ids[0];
  $('right').value = ids.length > 1 ? ids[1] : ids[0];
  document.body.dataset.ready = '1';
}

function zeroShotLabels(other) {
  const m = models[other];
  if (m && m.labels && m.labels.length) {
    const d = {};
    for (const l of m.labels) d[l] = (m.label_descriptions && m.label_descriptions[l]) || l;
    return d;
  }
  return null;
}

async function ask(name, other, text) {
  const m = models[name];
  if (m.export_kind === 'tagger') {
    const r = await fetch('/v1/ner', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                        body: JSON.stringify({ model: name, input: text }) });
    const body = await r.json();
    if (!r.ok) return { error: body.error ? body.error.message : r.statusText };
    return { entities: body.data[0].entities, source: text };
  }
  if (m.export_kind === 'embedder' || (name === 'base' && models[other] && models[other].export_kind === 'embedder')) {
    const r = await fetch('/v1/embeddings', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                              body: JSON.stringify({ model: name, input: text }) });
    const body = await r.json();
    if (!r.ok) return { error: body.error ? body.error.message : r.statusText };
    return { embedding: body.data[0].embedding, usage: body.usage };
  }
  if (m.export_kind === 'classifier') {
    const req = { model: name, input: text };
    if (name === 'base' && !(m.labels && m.labels.length)) {
      const labels = zeroShotLabels(other);
      if (!labels) return { error: 'pick an adapter on the other side: base classifies zero-shot with its labels' };
      req.labels = labels;
    }
    const r = await fetch('/v1/classify', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                             body: JSON.stringify(req) });
    const body = await r.json();
    if (!r.ok) return { error: body.error ? body.error.message : r.statusText };
    return { classification: body.data[0] };
  }
  const req = { model: name, messages: [{ role: 'user', content: text }],
                max_tokens: parseInt($('max_tokens').value || '32', 10), temperature: 0 };
  const r = await fetch('/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                                   body: JSON.stringify(req) });
  const body = await r.json();
  if (!r.ok) return { error: body.error ? body.error.message : r.statusText };
  return { text: body.choices[0].message.content, usage: body.usage };
}

function show(side, name, result, ms) {
  $(side + '-name').textContent = name;
  const out = $(side + '-out');
  if (result.error) { out.innerHTML = `<span class="error">${esc(result.error)}</span>`; return; }
  if (result.classification) {
    const c = result.classification;
    const rows = Object.entries(c.scores).sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v.toFixed(3)}</td></tr>`).join('');
    out.innerHTML = `<div class="label">${esc(c.label)}</div><table>${rows}</table>`;
  } else if (result.embedding) {
    const v = result.embedding;
    const head = v.slice(0, 8).map((x) => x.toFixed(3)).join(', ');
    out.innerHTML = `<div class="label">${v.length} dimensions</div><div>[${esc(head)}, ...]</div>`;
  } else if (result.entities) {
    const chars = Array.from(result.source);  // offsets count code points, as Python does
    let html = '', at = 0;
    for (const e of result.entities) {
      html += esc(chars.slice(at, e.start).join('')) +
        `<mark title="${esc(e.score)}">${esc(e.text)} <b>${esc(e.label)}</b></mark>`;
      at = e.end;
    }
    out.innerHTML = `<div>${html + esc(chars.slice(at).join(''))}</div>`;
  } else {
    out.innerHTML = `<div>${esc(result.text)}</div>`;
  }
  out.innerHTML += `<div class="meta">${ms.toFixed(0)} ms</div>`;
}

async function send() {
  const text = $('prompt').value;
  const left = $('left').value, right = $('right').value;
  $('status').textContent = 'asking both...';
  document.body.dataset.done = '';
  const timed = async (name, other) => { const t = performance.now(); const r = await ask(name, other, text);
                                         return [r, performance.now() - t]; };
  const [[l, lt], [r, rt]] = await Promise.all([timed(left, right), timed(right, left)]);
  show('left', left, l, lt);
  show('right', right, r, rt);
  $('status').textContent = '';
  document.body.dataset.done = '1';
}

$('send').addEventListener('click', () => send().catch((e) => { $('status').textContent = String(e); }));
loadModels().catch((e) => { $('status').textContent = 'could not list models: ' + e; });
</script>
</body>
</html>
"""
