// The live dashboard: polls the JSON snapshot every few seconds and feeds the Chart.js charts.
"use strict";

(function () {
  const MAX_POINTS = 90; // 3 minutes at the default 2 s refresh
  const MIB = 1024 * 1024;
  const COLORS = ["#2e86de", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
  const body = document.body;
  const source = body.dataset.source;
  const pollMs = Number(body.dataset.pollMs) || 2000;
  const state = { updates: 0, errors: 0, last: null, charts: {} };
  window.asrDashboard = state; // read by the browser test and handy in the console

  function lineChart(id, yTitle, extraScales) {
    const scales = {
      x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
      y: { beginAtZero: true, title: { display: true, text: yTitle } },
      ...(extraScales || {}),
    };
    return new Chart(document.getElementById(id), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, spanGaps: true,
        elements: { point: { radius: 0 }, line: { borderWidth: 2, tension: 0.2 } },
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales,
      },
    });
  }

  // A series keyed by name: created the first time it has a value (workers come and go).
  function push(chart, name, value, axis) {
    let ds = chart.data.datasets.find((d) => d.label === name);
    if (!ds) {
      const color = COLORS[chart.data.datasets.length % COLORS.length];
      ds = { label: name, data: [], borderColor: color, backgroundColor: color, yAxisID: axis || "y" };
      // Earlier points of a new series are unknown, not zero.
      ds.data = new Array(Math.max(0, chart.data.labels.length - 1)).fill(null);
      chart.data.datasets.push(ds);
    }
    ds.data.push(value === undefined ? null : value);
  }

  function addLabel(chart, label) {
    chart.data.labels.push(label);
  }

  function finish(chart) {
    const n = chart.data.labels.length;
    for (const ds of chart.data.datasets) {
      while (ds.data.length < n) ds.data.push(null); // a worker that stopped reporting
    }
    if (n > MAX_POINTS) {
      chart.data.labels.splice(0, n - MAX_POINTS);
      for (const ds of chart.data.datasets) ds.data.splice(0, n - MAX_POINTS);
    }
    chart.update("none");
  }

  function render(snap) {
    const label = new Date(snap.ts * 1000).toLocaleTimeString([], { hour12: false });
    const c = state.charts;
    for (const chart of Object.values(c)) addLabel(chart, label);

    push(c.cpu, "API host (all cores)", snap.api.host_cpu_percent);
    push(c.cpu, "API processes", snap.api.process_cpu_percent);
    push(c.memory, "API processes", snap.api.process_memory_rss_bytes / MIB);
    for (const w of snap.workers) {
      if (w.cpu_percent !== null) push(c.cpu, w.hostname, w.cpu_percent);
      if (w.memory_rss_bytes !== null) push(c.memory, w.hostname, w.memory_rss_bytes / MIB);
      if (w.gpu_memory_bytes !== null) push(c.memory, w.hostname + " GPU", w.gpu_memory_bytes / MIB);
    }
    push(c.queue, "queue depth", snap.queue_depth);
    push(c.queue, "workers online", snap.workers_online);
    push(c.queue, "running", snap.active_tasks);
    push(c.latency, "submit p50", snap.submit_latency_s.p50);
    push(c.latency, "submit p95", snap.submit_latency_s.p95);
    push(c.latency, "end-to-end p50", snap.end_to_end_s.p50);
    push(c.latency, "end-to-end p95", snap.end_to_end_s.p95);
    push(c.throughput, "jobs / min", snap.jobs_per_minute);
    push(c.throughput, "audio s / s", snap.audio_seconds_per_second, "y2");
    for (const chart of Object.values(c)) finish(chart);

    text("tile-queue", snap.queue_depth);
    text("tile-workers", snap.workers_online);
    text("tile-active", snap.active_tasks);
    text("tile-live", snap.live_sessions);
    text("tile-jpm", snap.jobs_per_minute);
    text("tile-total", snap.stats.jobs_total);
    text("tile-failed", snap.stats.by_status.failed);
    renderJobs(snap.latest_jobs);
  }

  function text(id, value) {
    document.getElementById(id).textContent = value === null ? "–" : String(value);
  }

  function fixed(value, digits) {
    return value === null || value === undefined ? "" : Number(value).toFixed(digits);
  }

  function renderJobs(jobs) {
    const rows = jobs.map((j) => {
      const tr = document.createElement("tr");
      const cells = [
        [j.task_id.slice(0, 8), ""], [j.status, "st-" + j.status], [j.filename, ""],
        [fixed(j.duration_s, 2), "num"], [fixed(j.queue_wait_s, 3), "num"],
        [fixed(j.processing_s, 3), "num"], [fixed(j.rtf, 4), "num"], [j.worker || "", ""],
        [j.created_at ? new Date(j.created_at).toLocaleTimeString([], { hour12: false }) : "", ""],
      ];
      for (const [value, cls] of cells) {
        const td = document.createElement("td");
        td.textContent = value; // never HTML: file names come from clients
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      return tr;
    });
    document.querySelector("#jobs tbody").replaceChildren(...rows);
  }

  function setStatus(message, isError) {
    const el = document.getElementById("status");
    el.textContent = message;
    el.classList.toggle("error", isError);
  }

  async function poll() {
    try {
      const headers = { Accept: "application/json" };
      const key = sessionStorage.getItem("asrApiKey");
      if (key) headers["X-API-Key"] = key;
      const response = await fetch(source, { headers });
      // With API_KEYS set, the figures need a key: ask for one (kept in this tab only).
      document.getElementById("key-form").hidden = response.status !== 401;
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      const snap = await response.json();
      render(snap);
      state.last = snap;
      state.updates += 1;
      setStatus("updated " + new Date(snap.ts * 1000).toLocaleTimeString([], { hour12: false }) +
                " · every " + pollMs / 1000 + " s", false);
    } catch (err) {
      state.errors += 1;
      setStatus("cannot reach the service: " + err.message, true);
    } finally {
      setTimeout(poll, pollMs);
    }
  }

  function askForKey() {
    const form = document.getElementById("key-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem("asrApiKey", document.getElementById("key-input").value.trim());
      form.hidden = true;
    });
  }

  function start() {
    askForKey();
    state.charts = {
      cpu: lineChart("chart-cpu", "%"),
      memory: lineChart("chart-memory", "MiB"),
      queue: lineChart("chart-queue", "count"),
      latency: lineChart("chart-latency", "seconds"),
      throughput: lineChart("chart-throughput", "jobs / min", {
        y2: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false },
              title: { display: true, text: "audio s / s" } },
      }),
    };
    poll();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
