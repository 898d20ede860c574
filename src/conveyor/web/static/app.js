// conveyor dashboard behaviour. Loaded as a file (the CSP forbids inline scripts); no libraries.
(function () {
  "use strict";

  var MAX_POINTS = 60;

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  // The top of the y axis: four gridline steps of 1, 2 or 5 times a power of ten.
  function niceMax(value) {
    if (value <= 1) return 1;
    var raw = value / 4;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= raw) return 4 * steps[i] * power;
    }
    return 40 * power;
  }

  function formatRate(value) {
    if (value >= 1000) return (value / 1000).toFixed(1) + "k";
    if (value >= 10 || value === 0) return String(Math.round(value));
    return String(parseFloat(value.toFixed(2)));
  }

  // The live graph: polls /stats, plots processed and failed jobs per second.
  function LiveGraph(canvas) {
    this.canvas = canvas;
    this.url = canvas.getAttribute("data-stats-url");
    this.pollMs = parseInt(canvas.getAttribute("data-poll-ms"), 10) || 2000;
    this.points = [];
    this.previous = null;
    this.colors = {
      processed: cssVar("--accent", "#4f46e5"),
      failed: cssVar("--danger", "#c2410c"),
      grid: cssVar("--border", "#e3e6eb"),
      text: cssVar("--muted", "#667085"),
    };
  }

  LiveGraph.prototype.start = function () {
    var self = this;
    self.draw();
    self.poll();
    window.setInterval(function () { self.poll(); }, self.pollMs);
    window.addEventListener("resize", function () { self.draw(); });
  };

  LiveGraph.prototype.poll = function () {
    var self = this;
    fetch(self.url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (info) { if (info) self.record(info); })
      .catch(function () { /* a missed poll just leaves a gap */ });
  };

  LiveGraph.prototype.record = function (info) {
    var totals = info.faktory || {};
    var now = performance.now();
    var current = { t: now, processed: totals.total_processed || 0, failed: totals.total_failures || 0 };
    if (this.previous) {
      var seconds = Math.max(0.001, (current.t - this.previous.t) / 1000);
      this.points.push({
        processed: Math.max(0, (current.processed - this.previous.processed) / seconds),
        failed: Math.max(0, (current.failed - this.previous.failed) / seconds),
      });
      if (this.points.length > MAX_POINTS) this.points.shift();
    }
    this.previous = current;
    updateSummary(info);
    refreshHistory(current.processed + current.failed);
    var last = this.points[this.points.length - 1];
    this.canvas.setAttribute("data-points", String(this.points.length));
    if (last) {
      this.canvas.setAttribute("data-last-processed", last.processed.toFixed(3));
      this.canvas.setAttribute("data-last-failed", last.failed.toFixed(3));
    }
    this.draw();
  };

  LiveGraph.prototype.draw = function () {
    var canvas = this.canvas;
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var left = 40, right = 8, top = 8, bottom = 18;
    var plotW = width - left - right, plotH = height - top - bottom;
    var peak = 0;
    this.points.forEach(function (p) { peak = Math.max(peak, p.processed, p.failed); });
    var max = niceMax(peak);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = this.colors.text;
    ctx.strokeStyle = this.colors.grid;
    ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = top + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(width - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(formatRate((max * i) / 4), left - 6, y + 4);
    }
    ctx.textAlign = "left";
    ctx.fillText("jobs/s, last " + Math.round((MAX_POINTS * this.pollMs) / 1000) + " s", left, height - 4);
    this.line(ctx, "processed", left, top, plotW, plotH, max);
    this.line(ctx, "failed", left, top, plotW, plotH, max);
  };

  LiveGraph.prototype.line = function (ctx, key, left, top, plotW, plotH, max) {
    var points = this.points;
    if (points.length === 0) return;
    var step = plotW / (MAX_POINTS - 1);
    var offset = MAX_POINTS - points.length;
    ctx.beginPath();
    points.forEach(function (p, i) {
      var x = left + (offset + i) * step;
      var y = top + plotH - (p[key] / max) * plotH;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = this.colors[key];
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.stroke();
  };

  function updateSummary(info) {
    var f = info.faktory || {}, sets = f.sets || {}, features = info.features || {};
    var values = {
      processed: f.total_processed, failed: f.total_failures, busy: sets.working,
      enqueued: f.total_enqueued, retries: sets.retries, scheduled: sets.scheduled, dead: sets.dead,
      cancelled: (features.cancellation || {}).cancelled,
      aggregating: (features.aggregation || {}).aggregating,
    };
    Object.keys(values).forEach(function (key) {
      var el = document.querySelector('[data-summary="' + key + '"]');
      if (el && typeof values[key] === "number") el.textContent = values[key].toLocaleString("en-US");
    });
  }

  // The History chart is drawn by the server; when the totals move, fetch it again so today's
  // bar grows without a reload.
  var historyTotal = null, historyLoading = false;
  function refreshHistory(total) {
    var chart = document.querySelector(".history-chart[data-history-url]");
    if (!chart || historyLoading) return;
    if (historyTotal === null) { historyTotal = total; return; }
    if (total === historyTotal) return;
    historyLoading = true;
    fetch(chart.getAttribute("data-history-url"), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          chart.innerHTML = html;
          historyTotal = total;
          chart.setAttribute("data-refreshed", String(total));
        }
      })
      .catch(function () { /* try again at the next poll */ })
      .then(function () { historyLoading = false; });
  }

  // "Select all" checkboxes and confirmations for destructive buttons.
  function wireForms() {
    document.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var form = box.closest("form") || document;
        form.querySelectorAll('input[type=checkbox][name="' + box.getAttribute("data-select-all") + '"]')
          .forEach(function (other) { if (other.value !== "all") other.checked = box.checked; });
      });
    });
    document.querySelectorAll("[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireForms();
    var canvas = document.getElementById("live-graph");
    if (canvas) new LiveGraph(canvas).start();
  });
})();
