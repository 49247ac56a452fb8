// The dashboard's own script and style, served from /static: no CDN, no font, nothing from the
// internet, no front-end build. The pages are complete HTML from the server; the script only runs
// the action buttons (with the CSRF token) and follows a running job's event stream.

export const APP_JS = `'use strict';
(function () {
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';
  function text(el, t) { el.textContent = t; return el; }
  document.addEventListener('click', function (e) {
    var b = e.target.closest('button[data-post]');
    if (!b) return;
    e.preventDefault();
    b.disabled = true;
    var area = document.getElementById('job-area');
    fetch(b.getAttribute('data-post'), { method: 'POST', headers: { 'X-CSRF-Token': csrf, 'Accept': 'application/json' }, credentials: 'same-origin' })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (r) {
        b.disabled = false;
        if (!area) return;
        area.replaceChildren();
        var p = document.createElement('p');
        if (!r.ok && !r.body.job) { p.className = 'error'; area.append(text(p, r.body.error || 'refused')); return; }
        var a = document.createElement('a');
        a.href = '/jobs/' + r.body.job.id;
        text(a, r.body.job.kind + ' of ' + r.body.job.database + (r.ok ? ' started' : ' already running'));
        p.append(a);
        area.append(p);
        follow(r.body.job.id, area);
      }, function () { b.disabled = false; });
  });
  function follow(id, area) {
    var list = document.createElement('ol');
    list.className = 'events';
    area.append(list);
    var es = new EventSource('/api/v1/jobs/' + id + '/events');
    es.addEventListener('event', function (m) { var e = JSON.parse(m.data); var li = document.createElement('li'); li.className = e.level; list.append(text(li, e.message)); });
    es.addEventListener('end', function (m) {
      es.close();
      var j = JSON.parse(m.data);
      var p = document.createElement('p');
      p.className = j.state === 'succeeded' ? 'done' : 'error';
      p.setAttribute('data-job-state', j.state);
      area.append(text(p, j.kind + ' ' + j.state + (j.error ? ': ' + j.error : '')));
    });
  }
  var stream = document.querySelector('#job-events[data-stream]');
  if (stream) {
    var es = new EventSource(stream.getAttribute('data-stream'));
    es.addEventListener('event', function (m) { var e = JSON.parse(m.data); var li = document.createElement('li'); li.className = e.level; stream.append(text(li, e.message)); });
    es.addEventListener('end', function () { es.close(); location.reload(); });
  }
})();
`;

export const APP_CSS = `*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1b1f24;background:#f6f7f9}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:center;padding:.6rem 1rem;background:#1f2a37;color:#fff}
header a{color:#fff;text-decoration:none}
.brand{font-weight:700;letter-spacing:.02em}
nav{display:flex;gap:1rem}
.logout{margin-left:auto;display:flex;gap:.5rem;align-items:center;font-size:.9em}
main{padding:1rem;max-width:1200px;margin:0 auto}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.table-wrap{overflow-x:auto;background:#fff;border:1px solid #dde1e6;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:.45rem .6rem;border-bottom:1px solid #eceff2;text-align:left;vertical-align:top}
th{font-size:.85em;color:#57606a;font-weight:600;background:#fafbfc}
.sub{font-size:.82em;color:#57606a}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:999px;font-size:.8em;font-weight:600;background:#e7ebef}
.badge.fresh{background:#dcf5e3;color:#14532d}
.badge.stale{background:#fff3c4;color:#713f12}
.badge.failing{background:#fde2e1;color:#7f1d1d}
.badge.never{background:#e7ebef;color:#374151}
.label{display:inline-block;padding:0 .35rem;margin:.1rem 0;border:1px solid #d0d7de;border-radius:4px;font-size:.8em;background:#fff}
.error{color:#b42318}
.done{color:#14532d}
button{font:inherit;padding:.3rem .7rem;border:1px solid #9aa4ae;border-radius:5px;background:#fff;cursor:pointer}
button:disabled{opacity:.5}
.actions button{margin:.1rem .25rem .1rem 0}
.spark polyline{fill:none;stroke:#2563eb;stroke-width:1.5}
.login{display:grid;gap:.7rem;max-width:22rem}
.login input{width:100%;padding:.4rem;font:inherit}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}
.facts dt{color:#57606a}
.hash{font-size:.75em;word-break:break-all}
pre{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.7rem;overflow-x:auto}
li.warn{color:#713f12}li.error{color:#b42318}
@media (max-width:640px){main{padding:.6rem}th,td{padding:.35rem .4rem}
table.databases thead{display:none}
table.databases tr{display:grid;grid-template-columns:1fr 1fr;gap:.1rem .6rem;padding:.5rem;border-bottom:1px solid #dde1e6}
table.databases td{display:block;border:none;padding:.15rem 0}
table.databases td:empty{display:none}
table.databases td.actions{grid-column:1/-1}}
`;
