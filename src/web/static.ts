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
  function follow(id, area, then) {
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
      if (then && j.state === 'succeeded') {
        fetch('/api/v1/jobs/' + id, { headers: { accept: 'application/json' } }).then(function (r) { return r.json(); }).then(function (full) { then(full.result); });
      }
    });
  }
  function post(url, body) {
    return fetch(url, { method: 'POST', headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json', 'Accept': 'application/json' }, credentials: 'same-origin', body: JSON.stringify(body || {}) })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, status: r.status, body: b }; }); });
  }
  function para(cls, t) { var p = document.createElement('p'); if (cls) p.className = cls; return text(p, t); }
  function started(area, r) {
    if (!r.body.job) { area.append(para('error', r.body.error || 'refused')); return; }
    var a = document.createElement('a');
    a.href = '/jobs/' + r.body.job.id;
    var p = document.createElement('p');
    p.append(text(a, r.body.job.kind + ' of ' + r.body.job.database + (r.ok ? ' started' : ' already running')));
    area.append(p);
    follow(r.body.job.id, area);
  }
  // Restore: the plan first, then the typed name.
  var restore = document.getElementById('restore-form');
  if (restore) {
    var out = document.getElementById('restore-area');
    restore.addEventListener('submit', function (e) {
      e.preventDefault();
      var to = restore.elements.namedItem('to').value;
      var url = '/api/v1/backups/' + encodeURIComponent(restore.getAttribute('data-backup')) + '/restore';
      out.replaceChildren(para('', 'Checking the backup in full, and the target…'));
      // The plan is a job (it verifies the whole backup): follow it, then show its result.
      post(url, { to: to, dryRun: true }).then(function (r) {
        if (!r.body.job) { out.replaceChildren(para('error', r.body.error || 'refused')); return; }
        follow(r.body.job.id, out, function (result) { showPlan(url, to, result); });
      });
    });
    function showPlan(url, to, body) {
      var plan = body.plan;
      var ul = document.createElement('ul');
      ul.className = 'plan';
      [
        'backup ' + plan.backup.id + ' (' + plan.backup.tables + ' tables, ' + plan.backup.rows + ' rows)',
        'checked: ' + plan.structure,
        'target: ' + plan.target + (plan.targetExists ? ' (exists: ' + (plan.targetTables || 0) + ' tables)' : ' (new)'),
        'mode: ' + (plan.mode === 'swap' ? 'restore into ' + plan.temporary + ', then swap it in; the live database is kept as ' + plan.keptAs : plan.mode === 'new' ? 'a new database' : 'in place')
      ].forEach(function (line) { var li = document.createElement('li'); ul.append(text(li, line)); });
      out.append(ul);
      body.warnings.forEach(function (w) { out.append(para('warn', w)); });
      var form = document.createElement('form');
      form.id = 'restore-confirm';
      var label = document.createElement('label');
      label.append(text(document.createElement('span'), 'Type ' + body.confirmWith + ' to restore: '));
      var input = document.createElement('input');
      input.name = 'confirm';
      input.autocomplete = 'off';
      label.append(input);
      var button = document.createElement('button');
      button.type = 'submit';
      form.append(label, text(button, 'Restore'));
      out.append(form);
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        if (input.value !== body.confirmWith) { out.append(para('error', 'The name does not match ' + body.confirmWith + ': nothing was restored.')); return; }
        button.disabled = true;
        post(url, { to: to, confirm: input.value }).then(function (s) { started(out, s); });
      });
    }
  }
  // Prune: what the retention policy would remove (every role), then, for admins, the confirmation.
  var prune = document.getElementById('prune-button');
  if (prune) {
    var pruneArea = document.getElementById('prune-area');
    var canPrune = prune.hasAttribute('data-can-prune');
    prune.addEventListener('click', function () {
      var url = prune.getAttribute('data-url');
      fetch(url, { headers: { accept: 'application/json' } }).then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) { return { ok: res.ok, body: body }; });
      }).then(function (r) {
        pruneArea.replaceChildren();
        if (!r.ok) { pruneArea.append(para('error', r.body.error || 'refused')); return; }
        var total = 0;
        r.body.storages.forEach(function (s) {
          total += s.remove.length;
          pruneArea.append(para('', s.storage + ' (' + s.policy + '): ' + s.remove.length + ' to remove, ' + s.keep.length + ' kept'));
          var ul = document.createElement('ul');
          s.remove.forEach(function (b) { var li = document.createElement('li'); ul.append(text(li, b.id + ' — ' + b.reasons.join('; '))); });
          pruneArea.append(ul);
        });
        if (total === 0) { pruneArea.append(para('done', 'Nothing to remove.')); return; }
        if (!canPrune) { pruneArea.append(para('', 'Only an admin can prune.')); return; }
        var go = document.createElement('button');
        go.id = 'prune-confirm';
        pruneArea.append(text(go, 'Prune now'));
        go.addEventListener('click', function () { go.disabled = true; post(url, { confirm: true }).then(function (s) { started(pruneArea, s); }); });
      });
    });
  }
  // Charts of the database page (uPlot), from the JSON the page carries.
  var data = document.getElementById('chart-data');
  if (data && window.uPlot) {
    var d = JSON.parse(data.textContent);
    document.querySelectorAll('.chart[data-series]').forEach(function (el) {
      var key = el.getAttribute('data-series');
      var width = Math.max(260, Math.min(560, el.parentElement.clientWidth || 360));
      new window.uPlot({ width: width, height: 160, legend: { show: false }, scales: { x: { time: true, range: function (u, min, max) { var pad = Math.max(60, (max - min) * 0.05); return [min - pad, max + pad]; } } }, series: [{}, { stroke: '#2563eb', width: 1.5, points: { show: d.t.length < 60 } }] }, [d.t, d[key]], el);
      el.setAttribute('data-points', String(d.t.length));
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
.calendar-wrap{display:inline-block;max-width:100%}
table.calendar{border-collapse:separate;border-spacing:3px;width:auto}
table.calendar th{font-weight:400;font-size:.75em;padding:0 .3rem 0 0;border:0;text-align:right}
.day{display:inline-block;width:14px;height:14px;border-radius:3px;background:#eef1f4;padding:0;border:0}
td.day{display:table-cell}
.day.ok{background:#4ade80}.day.mixed{background:#fbbf24}.day.failed{background:#ef4444}.day.future{background:transparent}
.legend{font-size:.8em}.legend .day{vertical-align:middle;margin-left:.6rem}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.label{display:inline-block;padding:0 .35rem;margin:.1rem 0;border:1px solid #d0d7de;border-radius:4px;font-size:.8em;background:#fff}
.error{color:#b42318}
.done{color:#14532d}
button{font:inherit;padding:.3rem .7rem;border:1px solid #9aa4ae;border-radius:5px;background:#fff;cursor:pointer}
button:disabled{opacity:.5}
.actions button{margin:.1rem .25rem .1rem 0}
.spark polyline{fill:none;stroke:#2563eb;stroke-width:1.5}
.warn{color:#713f12}
#restore-form input,#restore-confirm input{font:inherit;padding:.3rem;min-width:16rem;max-width:100%}
form{margin:.4rem 0}
.charts{display:flex;flex-wrap:wrap;gap:1rem}
.charts figure{margin:0;background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.4rem;max-width:100%;overflow:hidden}
.charts figcaption{font-size:.85em;color:#57606a}
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
