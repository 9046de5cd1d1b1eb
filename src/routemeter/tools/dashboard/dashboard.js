// routemeter dashboard: reads the JSON endpoints beside this page (relative URLs, so the page
// works under any metrics_path) and draws them with uPlot. Every string that comes from JSON
// reaches the DOM through textContent or a text node, never through markup.
"use strict";
(() => {
  const WINDOWS = ["15m", "1h", "6h", "24h", "7d", "30d"];
  const DEFAULT_WINDOW = "1h";
  const REFRESH_MS = 5000;
  const RECENT_LIMIT = 50;
  const CHART_HEIGHT = 220;
  const EMPTY = "no requests yet";
  const PALETTE = [
    "#2f6fd6", "#e4572e", "#17a673", "#d49a1e", "#8e6bbf",
    "#1aa1c9", "#d0576b", "#6c7a89", "#7fa33a", "#b5651d",
  ];

  const state = {
    window: windowFromHash(),
    paused: false,
    timer: 0,
    seq: 0,
    refreshes: 0,
    tab: "routes",
    latencyRoute: null,
    stats: null,
    routeHistory: null,
    recent: [],
  };
  const charts = new Map(); // element id -> {key, plot}

  // --- small helpers ----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** An element with text (never markup), a class, attributes and children. */
  function el(tag, opts = {}, children = []) {
    const node = document.createElement(tag);
    if (opts.cls) node.className = opts.cls;
    if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
    if (opts.title) node.title = String(opts.title);
    if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, String(v));
    if (opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = v === null || v === undefined ? "" : String(v);
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const DASH = "–";

  function fmtInt(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
  }
  function fmtCompact(v) {
    if (!isNum(v)) return DASH;
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(v * 100) / 100);
  }
  function fmtSeconds(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "0 ms";
    if (v < 0.01) return (v * 1000).toFixed(2) + " ms";
    if (v < 1) return (v * 1000).toFixed(0) + " ms";
    if (v < 100) return v.toFixed(2) + " s";
    return v.toFixed(0) + " s";
  }
  function fmtUSD(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "$0";
    if (v < 0) return "−" + fmtUSD(-v); // savings below the baseline
    if (Math.abs(v) >= 100) return "$" + v.toFixed(0);
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    return "$" + Number(v.toPrecision(3)).toString();
  }
  function fmtPct(v) {
    return isNum(v) ? (v * 100).toFixed(1) + "%" : DASH;
  }
  function fmtRate(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "0/s";
    if (v < 0.01) return Number(v.toPrecision(2)).toString() + "/s";
    return (v >= 10 ? v.toFixed(1) : v.toFixed(2)) + "/s";
  }
  function fmtClock(unix) {
    return isNum(unix) ? new Date(unix * 1000).toLocaleTimeString() : DASH;
  }
  function fmtDateTime(unix) {
    return isNum(unix) ? new Date(unix * 1000).toLocaleString() : DASH;
  }

  function windowFromHash() {
    const m = /(?:^#|&)w=([0-9a-z]+)/.exec(location.hash);
    return m && WINDOWS.includes(m[1]) ? m[1] : DEFAULT_WINDOW;
  }

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  /** GET a JSON document beside this page; the Basic credentials the browser keeps for the
   * page go with it (same origin). */
  async function getJSON(path) {
    const r = await fetch(path, {
      cache: "no-store",
      credentials: "same-origin",
      headers: { accept: "application/json" },
    });
    if (r.status === 401) throw new Error("the endpoint asks for the metrics token: reload the page and enter it as the password");
    if (!r.ok) {
      const err = new Error(`${path.split("?")[0]}: HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  function showStatus(message) {
    const node = $("status");
    node.hidden = !message;
    node.textContent = message || "";
  }

  // --- tables -----------------------------------------------------------------------------

  /** Replace a scrolling box's content, keeping where the reader had scrolled to (a refresh
   * every few seconds must not throw a phone user back to the first column). */
  function swap(box, node) {
    const left = box.scrollLeft;
    const top = box.scrollTop;
    box.replaceChildren(node);
    box.scrollLeft = left;
    box.scrollTop = top;
  }

  /** A table; each cell keeps its raw value in data-value (what the tests compare) and its
   * column in data-col. `columns`: {key, label, get(row), fmt, num}. */
  function table(columns, rows, opts = {}) {
    const head = el("tr", {}, columns.map((c) => el("th", { text: c.label, cls: c.num ? "num" : "", title: c.title })));
    const body = el("tbody");
    if (rows.length === 0) {
      body.append(el("tr", {}, [el("td", { cls: "empty", text: opts.empty || EMPTY, attrs: { colspan: columns.length } })]));
    }
    for (const row of rows) body.append(tableRow(columns, row, opts));
    const parts = [el("thead", {}, [head]), body];
    if (opts.footer && rows.length > 0) parts.push(el("tfoot", {}, [tableRow(columns, opts.footer, {})]));
    return el("table", { data: opts.name ? { table: opts.name } : undefined }, parts);
  }

  function tableRow(columns, row, opts) {
    const tr = el("tr", { data: opts.key ? { key: opts.key(row) } : undefined });
    for (const c of columns) {
      const value = c.get(row);
      const td = el("td", { cls: c.num ? "num" : "", data: { col: c.key, value: value } });
      if (c.render) td.append(c.render(value, row));
      else td.textContent = c.fmt ? c.fmt(value) : value === null || value === undefined ? DASH : String(value);
      tr.append(td);
    }
    if (opts.onOpen) {
      tr.className = "clickable";
      tr.tabIndex = 0;
      tr.addEventListener("click", () => opts.onOpen(row));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          opts.onOpen(row);
        }
      });
    }
    return tr;
  }

  const tok = (type) => (r) => (r.tokens && isNum(r.tokens[type]) ? r.tokens[type] : 0);

  const ROUTE_COLUMNS = [
    { key: "route", label: "route", get: (r) => (r.route === "*" ? "all routes" : r.route) },
    { key: "requests", label: "requests", get: (r) => r.requests, fmt: fmtInt, num: true },
    { key: "rate", label: "req/s", get: (r) => r.rate, fmt: fmtRate, num: true },
    { key: "errors", label: "errors", get: (r) => r.errors, fmt: fmtInt, num: true },
    { key: "error_rate", label: "error %", get: (r) => r.error_rate, fmt: fmtPct, num: true },
    { key: "p50", label: "p50", get: (r) => r.duration.p50, fmt: fmtSeconds, num: true },
    { key: "p95", label: "p95", get: (r) => r.duration.p95, fmt: fmtSeconds, num: true },
    { key: "p99", label: "p99", get: (r) => r.duration.p99, fmt: fmtSeconds, num: true },
    { key: "ttft_p95", label: "TTFT p95", get: (r) => r.time_to_first_token.p95, fmt: fmtSeconds, num: true, title: "time to first token, streams" },
    { key: "attempts", label: "attempts", get: (r) => r.attempts, fmt: fmtInt, num: true },
    { key: "fallbacks", label: "fallbacks", get: (r) => r.fallbacks, fmt: fmtInt, num: true },
    { key: "rate_limited", label: "429 (router)", get: (r) => r.rate_limited, fmt: fmtInt, num: true },
    { key: "input_tokens", label: "tokens in", get: tok("input"), fmt: fmtInt, num: true },
    { key: "output_tokens", label: "tokens out", get: tok("output"), fmt: fmtInt, num: true },
    { key: "cost_usd", label: "cost", get: (r) => r.cost_usd, fmt: fmtUSD, num: true },
    { key: "cache_hit_ratio", label: "cache hit", get: (r) => r.cache_hit_ratio, fmt: fmtPct, num: true },
  ];

  function upstreamColumns(first) {
    return [
      ...first,
      { key: "attempts", label: "attempts", get: (r) => r.attempts, fmt: fmtInt, num: true },
      { key: "rate", label: "att/s", get: (r) => r.rate, fmt: fmtRate, num: true },
      { key: "errors", label: "errors", get: (r) => r.errors, fmt: fmtInt, num: true },
      { key: "success_rate", label: "success", get: (r) => r.success_rate, fmt: fmtPct, num: true },
      { key: "p50", label: "p50", get: (r) => r.duration.p50, fmt: fmtSeconds, num: true },
      { key: "p95", label: "p95", get: (r) => r.duration.p95, fmt: fmtSeconds, num: true },
      { key: "p99", label: "p99", get: (r) => r.duration.p99, fmt: fmtSeconds, num: true },
      { key: "ttfc_p95", label: "TTFC p95", get: (r) => r.time_to_first_chunk.p95, fmt: fmtSeconds, num: true, title: "time to first chunk from upstream" },
      { key: "input_tokens", label: "tokens in", get: tok("input"), fmt: fmtInt, num: true },
      { key: "output_tokens", label: "tokens out", get: tok("output"), fmt: fmtInt, num: true },
      { key: "cost_usd", label: "cost", get: (r) => r.cost_usd, fmt: fmtUSD, num: true },
      { key: "errors_by_type", label: "errors by type", get: (r) => byType(r.errors_by_type) },
    ];
  }

  function byType(map) {
    const entries = Object.entries(map || {}).sort((a, b) => b[1] - a[1]);
    return entries.length ? entries.map(([k, v]) => `${k}×${v}`).join(" ") : "";
  }

  const PROVIDER = { key: "provider", label: "provider", get: (r) => r.provider };
  const MODEL = { key: "model", label: "model", get: (r) => r.model };
  const ROUTE = { key: "route", label: "route", get: (r) => r.route };
  const TABS = {
    routes: { rows: (s) => s.routes, columns: ROUTE_COLUMNS, footer: (s) => s.total, key: (r) => r.route },
    providers: { rows: (s) => s.providers, columns: upstreamColumns([PROVIDER]), key: (r) => r.provider },
    models: { rows: (s) => s.models, columns: upstreamColumns([PROVIDER, MODEL]), key: (r) => `${r.provider}/${r.model}` },
    targets: { rows: (s) => s.targets, columns: upstreamColumns([ROUTE, PROVIDER, MODEL]), key: (r) => `${r.route}/${r.provider}/${r.model}` },
  };

  function renderStatsTable() {
    const s = state.stats;
    if (!s) return;
    const tab = TABS[state.tab];
    const footer = tab.footer ? tab.footer(s) : null;
    swap($("t-stats"),
      table(tab.columns, tab.rows(s) || [], { name: state.tab, key: tab.key, footer: footer }),
    );
  }

  function renderFallbacks(s) {
    const columns = [
      { key: "route", label: "route", get: (r) => r.route },
      { key: "from", label: "from", get: (r) => `${r.from_provider} / ${r.from_model}` },
      { key: "to", label: "to", get: (r) => `${r.to_provider} / ${r.to_model}` },
      { key: "reason", label: "reason (error.type)", get: (r) => r.reason },
      { key: "count", label: "count", get: (r) => r.count, fmt: fmtInt, num: true },
      { key: "rate", label: "per s", get: (r) => r.rate, fmt: fmtRate, num: true },
    ];
    swap($("t-fallbacks"),
      table(columns, s.fallbacks || [], { name: "fallbacks", empty: "no fallbacks in this window" }),
    );
  }

  function meter(ratio) {
    const bar = el("span");
    bar.style.width = `${isNum(ratio) ? Math.max(0, Math.min(1, ratio)) * 100 : 0}%`;
    return el("span", { cls: "meter", attrs: { "aria-hidden": "true" } }, [bar]);
  }

  function renderCache(s) {
    const columns = [
      { key: "route", label: "route", get: (r) => (r.route === "*" ? "all" : r.route) },
      { key: "name", label: "cache", get: (r) => r.name },
      { key: "lookups", label: "lookups", get: (r) => r.lookups, fmt: fmtInt, num: true },
      { key: "hits", label: "hits", get: (r) => r.hits, fmt: fmtInt, num: true },
      {
        key: "hit_ratio", label: "hit ratio", get: (r) => r.hit_ratio, num: true,
        render: (v) => el("span", {}, [meter(v), fmtPct(v)]),
      },
    ];
    const total = s.total || {};
    const footer = { route: "*", name: "every cache", lookups: total.cache_lookups, hits: total.cache_hits, hit_ratio: total.cache_hit_ratio };
    swap($("t-cache"),
      table(columns, s.caches || [], { name: "caches", footer: footer, empty: "no cache lookups in this window" }),
    );
  }

  /** A tile; ``raw`` (the number behind ``value``) is kept in data-value, as table cells do. */
  function kpi(label, value, sub, key, raw) {
    return el("div", { cls: "kpi", data: { kpi: key, value: raw } }, [
      el("div", { cls: "label", text: label }),
      el("div", { cls: "value", text: value }),
      el("div", { cls: "sub", text: sub || "\u00a0" }),
    ]);
  }

  function renderKpis(s) {
    const t = s.total;
    const tokens = t.tokens || {};
    const overhead = t.overhead || {};
    const tries = t.attempts_per_request || {};
    const share = isNum(t.savings_usd) && t.baseline_cost_usd > 0 ? t.savings_usd / t.baseline_cost_usd : null;
    const saved = isNum(t.savings_usd)
      ? `${fmtPct(share)} of ${fmtUSD(t.baseline_cost_usd)} baseline`
      : "no baseline cost in this window";
    $("kpis").replaceChildren(
      kpi("requests", fmtInt(t.requests), `${t.rate === null ? "since start" : fmtRate(t.rate)} · ${fmtInt(t.in_flight)} in flight`, "requests"),
      kpi("errors", fmtInt(t.errors), `${fmtPct(t.error_rate)} of requests`, "errors"),
      kpi("latency p95", fmtSeconds(t.duration.p95), `p50 ${fmtSeconds(t.duration.p50)} · p99 ${fmtSeconds(t.duration.p99)}`, "p95"),
      kpi("TTFT p95", fmtSeconds(t.time_to_first_token.p95), `p50 ${fmtSeconds(t.time_to_first_token.p50)}`, "ttft"),
      kpi("cost", fmtUSD(t.cost_usd), "", "cost"),
      kpi("tokens in / out", `${fmtCompact(tokens.input || 0)} / ${fmtCompact(tokens.output || 0)}`, "", "tokens"),
      kpi("fallbacks", fmtInt(t.fallbacks), `${fmtInt(t.attempts)} upstream attempts`, "fallbacks"),
      kpi("cache hit ratio", fmtPct(t.cache_hit_ratio), `${fmtInt(t.cache_hits)} of ${fmtInt(t.cache_lookups)} lookups`, "cache"),
      kpi("savings", fmtUSD(t.savings_usd), saved, "savings", t.savings_usd),
      kpi("goodput", fmtPct(t.goodput), `${fmtInt(t.good)} of ${fmtInt(t.requests)} met the SLO`, "goodput", t.goodput),
      kpi("overhead p95", fmtSeconds(overhead.p95), `p50 ${fmtSeconds(overhead.p50)} · ${isNum(tries.mean) ? tries.mean.toFixed(2) : DASH} attempts/request`, "overhead", overhead.p95),
    );
  }

  // --- recent requests and the detail view ---------------------------------------------------

  const model = (provider, name) => (provider || name ? `${provider || "?"} / ${name || "?"}` : DASH);
  const outcomeCell = (v) => el("span", { cls: v === "ok" ? "outcome-ok" : "outcome-bad", text: v || DASH });

  const RECENT_COLUMNS = [
    { key: "start", label: "time", get: (r) => r.start, fmt: fmtClock },
    { key: "route", label: "route", get: (r) => r.route },
    { key: "requested_model", label: "requested", get: (r) => r.requested_model },
    { key: "served", label: "served by", get: (r) => (r.provider || r.model ? model(r.provider, r.model) : null) },
    { key: "stream", label: "stream", get: (r) => (r.stream ? "yes" : "no") },
    { key: "outcome", label: "outcome", get: (r) => r.outcome, render: outcomeCell },
    { key: "attempts", label: "attempts", get: (r) => (r.attempts || []).length, fmt: fmtInt, num: true },
    { key: "duration_s", label: "duration", get: (r) => r.duration_s, fmt: fmtSeconds, num: true },
    { key: "ttft_s", label: "TTFT", get: (r) => r.ttft_s, fmt: fmtSeconds, num: true },
    { key: "input_tokens", label: "in", get: (r) => r.input_tokens, fmt: fmtInt, num: true },
    { key: "output_tokens", label: "out", get: (r) => r.output_tokens, fmt: fmtInt, num: true },
    { key: "cost_usd", label: "cost", get: (r) => r.cost_usd, fmt: fmtUSD, num: true },
  ];

  function renderRecent(list) {
    state.recent = list;
    swap($("t-recent"),
      table(RECENT_COLUMNS, list, { name: "recent", key: (r) => r.id, onOpen: (r) => openDetail(r) }),
    );
  }

  const ATTEMPT_COLUMNS = [
    { key: "n", label: "#", get: (r) => r.n, num: true },
    { key: "provider", label: "provider", get: (r) => r.provider },
    { key: "model", label: "model", get: (r) => r.model },
    { key: "outcome", label: "outcome", get: (r) => r.outcome, render: outcomeCell },
    { key: "duration_s", label: "duration", get: (r) => r.duration_s, fmt: fmtSeconds, num: true },
    { key: "ttft_s", label: "first chunk", get: (r) => r.ttft_s, fmt: fmtSeconds, num: true },
    { key: "input_tokens", label: "in", get: (r) => r.input_tokens, fmt: fmtInt, num: true },
    { key: "output_tokens", label: "out", get: (r) => r.output_tokens, fmt: fmtInt, num: true },
    { key: "cost_usd", label: "cost", get: (r) => r.cost_usd, fmt: fmtUSD, num: true },
  ];

  function renderDetail(r, note) {
    const facts = [
      ["id", r.id],
      ["started", fmtDateTime(r.start)],
      ["route", r.route],
      ["operation", r.operation],
      ["requested model", r.requested_model],
      ["served by", r.provider || r.model ? model(r.provider, r.model) : null],
      ["stream", r.stream ? "yes" : "no"],
      ["outcome", r.outcome],
      ["error.type", r.error_type],
      ["duration", fmtSeconds(r.duration_s)],
      ["time to first token", fmtSeconds(r.ttft_s)],
      ["tokens in / out", `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}`],
      ["cost", fmtUSD(r.cost_usd)],
    ];
    const dl = el("dl", { cls: "facts" });
    for (const [k, v] of facts) dl.append(el("dt", { text: k }), el("dd", { text: v === null || v === undefined || v === "" ? DASH : v, data: { fact: k } }));
    const attempts = (r.attempts || []).map((a, i) => ({ ...a, n: i + 1 }));
    const parts = [dl, el("h2", { text: "Upstream attempts" }),
      el("div", { cls: "scroll" }, [table(ATTEMPT_COLUMNS, attempts, { name: "attempts", empty: "no upstream attempt" })])];
    if (note) parts.unshift(el("p", { cls: "muted small", text: note }));
    $("detail-body").replaceChildren(...parts);
  }

  async function openDetail(summary) {
    const dialog = $("detail");
    $("detail-title").textContent = `Request ${summary.route || ""}`.trim();
    renderDetail(summary, "loading…");
    if (!dialog.open) dialog.showModal();
    try {
      const full = await getJSON(`requests/${encodeURIComponent(summary.id)}`);
      if (dialog.open) renderDetail(full, null);
    } catch (e) {
      const note = e.status === 404
        ? "This request has left the recent-requests ring; showing the summary from the list."
        : `Could not load the details: ${e.message}`;
      if (dialog.open) renderDetail(summary, note);
    }
  }

  // --- charts -----------------------------------------------------------------------------

  const sumOf = (arr) => (arr || []).reduce((a, v) => a + (isNum(v) ? v : 0), 0);

  /** Element-wise sum of equal-length arrays; null where every input is null. */
  function addUp(arrays, length) {
    const out = new Array(length).fill(null);
    for (const arr of arrays) {
      for (let i = 0; i < length; i++) {
        const v = arr ? arr[i] : null;
        if (isNum(v)) out[i] = (out[i] || 0) + v;
      }
    }
    return out;
  }

  /** Whole-number tick steps for axes that count things. */
  const COUNT_STEPS = [];
  for (let e = 1; e <= 1e12; e *= 10) COUNT_STEPS.push(e, 2 * e, 5 * e);

  /** The y axis as wide as its longest label (uPlot's own sizing recipe). */
  function yAxisSize(u, values, axisIdx) {
    const axis = u.axes[axisIdx];
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((acc, v) => (v.length > acc.length ? v : acc), "");
    if (longest !== "") {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 4;
  }

  /** Indices of values with no neighbour (a line cannot show them): drawn as points. */
  function isolatedPoints(u, si, show) {
    if (show) return null;
    const v = u.data[si];
    const idxs = [];
    for (let i = 0; i < v.length; i++) {
      if (isNum(v[i]) && !isNum(v[i - 1]) && !isNum(v[i + 1])) idxs.push(i);
    }
    return idxs.length ? idxs : null;
  }

  function setEmpty(box, message) {
    let note = box.querySelector(":scope > .empty");
    if (!message) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = el("div", { cls: "empty" });
      box.append(note);
    }
    note.textContent = message;
  }

  function chartWidth(box) {
    return Math.max(200, Math.floor(box.clientWidth || 300));
  }

  /** Draw (or update) a uPlot chart in the element `id`; `series`: {label, values, color,
   * dash, stepped}. A chart is rebuilt only when its series change. */
  function drawChart(id, timestamps, series, fmt, emptyMessage, counts = false) {
    const box = $(id);
    const key = JSON.stringify(series.map((s) => [s.label, s.color, s.dash || null, !!s.stepped]));
    const data = [timestamps, ...series.map((s) => s.values)];
    let entry = charts.get(id);
    if (!entry || entry.key !== key) {
      if (entry) entry.plot.destroy();
      const axis = cssVar("--axis", "#5f6878");
      const grid = cssVar("--grid", "#e8ebf0");
      const opts = {
        width: chartWidth(box),
        height: CHART_HEIGHT,
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, isNum(max) && max > 0 ? max * 1.08 : 1] } },
        axes: [
          { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
          {
            stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid },
            size: yAxisSize, values: (u, splits) => splits.map(fmt), incrs: counts ? COUNT_STEPS : undefined,
          },
        ],
        series: [
          { value: (u, v) => fmtDateTime(v) },
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 1.5,
            dash: s.dash,
            fill: s.fill,
            spanGaps: false,
            points: { show: (u) => u.data[0].length < 60, size: 5, filter: isolatedPoints },
            paths: s.stepped && uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
            value: (u, v) => fmt(v),
          })),
        ],
      };
      entry = { key, plot: new uPlot(opts, data, box) };
      charts.set(id, entry);
    } else {
      entry.plot.setData(data);
    }
    setEmpty(box, emptyMessage);
    // what was drawn, per series (read by the browser tests; harmless to anyone else)
    box.dataset.points = String(timestamps.length);
    // what each series adds up to: its counts when it draws rates of them
    box.dataset.sums = JSON.stringify(Object.fromEntries(series.map((s) => [s.label, sumOf(s.counted || s.values)])));
  }

  const resizer = new ResizeObserver((entries) => {
    for (const e of entries) {
      const entry = charts.get(e.target.id);
      if (entry) {
        const width = chartWidth(e.target);
        if (Math.abs(entry.plot.width - width) > 1) entry.plot.setSize({ width, height: CHART_HEIGHT });
      }
    }
  });
  for (const id of ["c-rps", "c-latency", "c-cost", "c-tokens", "c-errors"]) resizer.observe($(id));

  const ERROR_COLORS = ["#d64545", "#8e6bbf", "#b5651d", "#d0576b", "#6c7a89", "#c44536", "#1aa1c9"];

  function outcomeColor(name, i) {
    if (name === "ok") return cssVar("--ok", "#17875b");
    if (name === "429") return cssVar("--warn", "#b86e00");
    return ERROR_COLORS[i % ERROR_COLORS.length];
  }

  function renderRps(h) {
    const step = h.step_s || 1;
    const ts = h.timestamps || [];
    // the newest step is still filling: its rate is over the part that has passed
    const last = ts.length - 1;
    const spanOf = (i) => (i === last && isNum(h.at) ? Math.min(step, Math.max(1, h.at - ts[i])) : step);
    const outcomes = Object.entries(h.outcomes || {});
    outcomes.sort((a, b) => (a[0] === "ok" ? -1 : b[0] === "ok" ? 1 : sumOf(b[1]) - sumOf(a[1])));
    let errorIndex = 0;
    const series = outcomes.map(([name, values]) => ({
      label: name,
      color: outcomeColor(name, name === "ok" || name === "429" ? 0 : errorIndex++),
      values: values.map((v, i) => (isNum(v) ? v / spanOf(i) : v)),
      counted: values,
    }));
    const total = outcomes.reduce((a, [, values]) => a + sumOf(values), 0);
    drawChart("c-rps", h.timestamps, series, fmtRateAxis, total > 0 ? null : EMPTY);
  }
  function fmtRateAxis(v) {
    return isNum(v) ? (v >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString()) + "/s" : DASH;
  }

  const ALL_ROUTES = "*"; // as in /metrics/stats: no route label may contain "*"

  function renderLatency(h) {
    const routes = (h.series || []).map((s) => ({ name: s.route, label: s.route, requests: sumOf(s.requests), s }));
    routes.sort((a, b) => b.requests - a.requests || String(a.name).localeCompare(String(b.name)));
    if (h.total && routes.length > 1) {
      // every route together: the percentiles of all requests, not an average of routes'
      routes.unshift({ name: ALL_ROUTES, label: "all routes", requests: sumOf(h.total.requests), s: h.total });
    }
    const select = $("latency-route");
    const names = routes.map((r) => r.name);
    if (!names.includes(state.latencyRoute)) state.latencyRoute = names.length ? names[0] : null;
    const current = Array.from(select.options).map((o) => o.value);
    if (JSON.stringify(current) !== JSON.stringify(names)) {
      select.replaceChildren(...routes.map((r) => el("option", { text: r.label, attrs: { value: r.name } })));
    }
    if (state.latencyRoute !== null) select.value = state.latencyRoute;
    select.disabled = names.length < 2;
    select.parentElement.hidden = names.length === 0;
    const chosen = routes.find((r) => r.name === state.latencyRoute);
    const s = chosen ? chosen.s : {};
    const n = h.timestamps.length;
    const pick = (k) => (Array.isArray(s[k]) ? s[k] : new Array(n).fill(null));
    const series = [
      { label: "p50", values: pick("p50_s"), color: PALETTE[0] },
      { label: "p95", values: pick("p95_s"), color: PALETTE[3] },
      { label: "p99", values: pick("p99_s"), color: PALETTE[1] },
      { label: "TTFT p50", values: pick("ttft_p50_s"), color: PALETTE[5], dash: [5, 4] },
      { label: "TTFT p95", values: pick("ttft_p95_s"), color: PALETTE[4], dash: [5, 4] },
    ];
    drawChart("c-latency", h.timestamps, series, fmtSeconds, chosen && chosen.requests > 0 ? null : EMPTY);
  }

  function groupLabel(s) {
    if (s.model !== undefined && s.provider !== undefined) return `${s.provider} / ${s.model}`;
    if (s.provider !== undefined) return String(s.provider);
    return String(s.route);
  }

  function renderCost(h) {
    const rows = (h.series || []).map((s) => ({ label: groupLabel(s), values: s.cost_usd || [], total: sumOf(s.cost_usd) }));
    rows.sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
    const series = rows.map((r, i) => ({ label: r.label, values: r.values, color: PALETTE[i % PALETTE.length], stepped: true }));
    const spent = rows.reduce((a, r) => a + r.total, 0);
    const requests = (h.series || []).reduce((a, s) => a + sumOf(s.requests), 0);
    drawChart("c-cost", h.timestamps, series, fmtUSD, spent > 0 ? null : requests > 0 ? "no priced usage in this window" : EMPTY);
  }

  function renderTokens(h) {
    const n = h.timestamps.length;
    const all = h.series || [];
    const input = addUp(all.map((s) => s.input_tokens), n);
    const output = addUp(all.map((s) => s.output_tokens), n);
    const series = [
      { label: "input", values: input, color: PALETTE[0] },
      { label: "output", values: output, color: PALETTE[2] },
    ];
    drawChart("c-tokens", h.timestamps, series, fmtCompact, sumOf(input) + sumOf(output) > 0 ? null : EMPTY, true);
  }

  function renderProviderErrors(h) {
    const providers = (h.providers || []).map((p) => ({ p, errors: sumOf(p.errors), limited: sumOf(p.rate_limited), attempts: sumOf(p.attempts) }));
    providers.sort((a, b) => b.errors - a.errors || String(a.p.provider).localeCompare(String(b.p.provider)));
    const series = [];
    providers.forEach(({ p }, i) => {
      const color = PALETTE[i % PALETTE.length];
      series.push({ label: `${p.provider} errors`, values: p.errors || [], color });
      series.push({ label: `${p.provider} 429`, values: p.rate_limited || [], color, dash: [3, 3] });
    });
    const failed = providers.reduce((a, r) => a + r.errors, 0);
    const attempted = providers.reduce((a, r) => a + r.attempts, 0);
    drawChart("c-errors", h.timestamps, series, fmtCompact, failed > 0 ? null : attempted > 0 ? "no upstream errors in this window" : EMPTY, true);
    $("error-totals").replaceChildren(
      ...providers.map(({ p, errors, limited, attempts }) =>
        el("li", { data: { provider: p.provider, errors, rateLimited: limited, attempts } }, [
          `${p.provider}: ${fmtInt(errors)} of ${fmtInt(attempts)} attempts failed, ${fmtInt(limited)} rate-limited`,
        ]),
      ),
    );
  }

  // --- the refresh loop -------------------------------------------------------------------

  async function refresh() {
    clearTimeout(state.timer);
    const seq = ++state.seq;
    document.body.dataset.busy = "1";
    const w = encodeURIComponent(state.window);
    const [stats, byRoute, byModel, recent] = await Promise.allSettled([
      getJSON(`stats?window=${w}`),
      getJSON(`history?window=${w}&group_by=route`),
      getJSON(`history?window=${w}&group_by=model`),
      getJSON(`requests/recent?limit=${RECENT_LIMIT}`),
    ]);
    if (seq !== state.seq) return; // a newer refresh (another window) owns the page
    document.body.dataset.busy = "0";
    const problems = [];
    const guard = (result, what, render) => {
      if (result.status === "rejected") {
        problems.push(`${what}: ${result.reason && result.reason.message ? result.reason.message : result.reason}`);
        return;
      }
      try {
        render(result.value);
      } catch (e) {
        problems.push(`${what}: ${e && e.message ? e.message : e}`);
      }
    };
    guard(stats, "stats", (s) => {
      state.stats = s;
      renderKpis(s);
      renderStatsTable();
      renderFallbacks(s);
      renderCache(s);
    });
    guard(byRoute, "history by route", (h) => {
      state.routeHistory = h;
      renderRps(h);
      renderLatency(h);
      renderTokens(h);
      renderProviderErrors(h);
      const instances = (h.instances || []).length;
      $("footer").textContent = `routemeter · step ${fmtInt(h.step_s)} s` +
        (instances > 1 ? ` · ${instances} processes` : "") +
        " · nothing on this page loads from another host.";
    });
    guard(byModel, "history by model", renderCost);
    guard(recent, "recent requests", (r) => renderRecent(r.requests || []));
    showStatus(problems.length ? `Some panels could not load: ${problems.join("; ")}` : "");
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    document.body.dataset.window = state.window;
    $("updated").textContent = state.paused ? `paused · updated ${new Date().toLocaleTimeString()}` : `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
    schedule();
  }

  function schedule() {
    clearTimeout(state.timer);
    if (!state.paused) state.timer = setTimeout(tick, REFRESH_MS);
  }

  function tick() {
    if (document.hidden) schedule(); // refresh on return instead (visibilitychange)
    else refresh();
  }

  function setWindow(w) {
    if (!WINDOWS.includes(w)) return;
    state.window = w;
    for (const b of $("windows").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.window === w));
    const hash = `#w=${w}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    refresh();
  }

  $("windows").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-window]");
    if (b) setWindow(b.dataset.window);
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").setAttribute("aria-pressed", String(state.paused));
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (state.paused) {
      clearTimeout(state.timer);
      $("updated").textContent = "paused";
    } else refresh();
  });
  $("tabs").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-tab]");
    if (!b || !TABS[b.dataset.tab]) return;
    state.tab = b.dataset.tab;
    for (const t of $("tabs").querySelectorAll("button")) t.setAttribute("aria-selected", String(t === b));
    renderStatsTable();
  });
  $("latency-route").addEventListener("change", (e) => {
    state.latencyRoute = e.target.value;
    if (state.routeHistory) renderLatency(state.routeHistory);
  });
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("click", (e) => {
    if (e.target === $("detail")) $("detail").close(); // a click on the backdrop
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !state.paused) refresh();
  });
  window.addEventListener("hashchange", () => {
    const w = windowFromHash();
    if (w !== state.window) setWindow(w);
  });

  setWindow(state.window);
})();
