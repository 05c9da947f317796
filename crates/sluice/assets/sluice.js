// sluice dashboard: live sections (server-sent events, polling fallback) and charts.
(function () {
  'use strict';
  var body = document.body;
  var page = body.dataset.page;
  if (!page) return;

  // Never replace what someone is using: the focus, an open details, a form being edited.
  function inUse(el) {
    var a = document.activeElement;
    return (a && a !== body && el.contains(a)) ||
      el.querySelector('details[open]') !== null ||
      el.hasAttribute('data-editing') || el.querySelector('[data-editing]') !== null;
  }

  function apply(map) {
    Object.keys(map || {}).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el || !el.hasAttribute('data-live') || inUse(el) || el._last === map[id]) return;
      el.innerHTML = map[id];
      el._last = map[id];
      if (window.htmx) window.htmx.process(el);
    });
    body.dataset.updated = String(Date.now());
  }

  document.addEventListener('input', function (e) {
    var f = e.target.closest && e.target.closest('form');
    if (f) f.setAttribute('data-editing', '');
  });

  var q = '?page=' + encodeURIComponent(page);
  var polling = null;
  function poll() {
    fetch('/ui/fragments' + q, { credentials: 'same-origin' }).then(function (r) {
      if (r.redirected && r.url.indexOf('/ui/login') >= 0) { location.href = '/ui/login'; return {}; }
      return r.ok ? r.json() : {};
    }).then(apply).catch(function () {});
  }
  function startPolling() { if (!polling) { polling = setInterval(poll, 5000); poll(); } body.dataset.live = 'polling'; }
  function stopPolling() { if (polling) { clearInterval(polling); polling = null; } body.dataset.live = 'sse'; }
  if (window.EventSource) {
    var es = new EventSource('/ui/events' + q);
    es.addEventListener('fragments', function (e) {
      try { apply(JSON.parse(e.data)); } catch (x) { /* a broken push: the next one comes */ }
    });
    es.onopen = stopPolling;
    es.onerror = startPolling;
  } else {
    startPolling();
  }

  function drawCharts() {
    if (!window.uPlot) return;
    document.querySelectorAll('figure.chart').forEach(function (fig) {
      var name = fig.dataset.series;
      fetch('/api/v1/series?window=6h&name=' + encodeURIComponent(name), { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (list) {
          var pts = (list[0] && list[0].points) || [];
          var plot = fig.querySelector('.plot');
          var data = [pts.map(function (p) { return p[0] / 1000; }), pts.map(function (p) { return p[1]; })];
          if (!pts.length) { plot.textContent = 'no samples yet'; return; }
          if (fig._u) { fig._u.setData(data); return; }
          plot.textContent = '';
          fig._u = new window.uPlot({
            width: Math.max(plot.clientWidth, 280), height: 150, legend: { show: false },
            series: [{}, { label: name, stroke: '#2563eb', fill: 'rgba(37,99,235,0.12)', width: 2 }]
          }, data, plot);
        }).catch(function () {});
    });
  }
  window.addEventListener('load', function () { drawCharts(); setInterval(drawCharts, 15000); });
})();
