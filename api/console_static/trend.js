// The trend of one tag (uPlot): history with bucket=auto (raw readings for short windows, rollups
// for long ones), the tag's alarm limits as horizontal lines, and drag-to-zoom that re-queries
// the selected window, so zooming into a month of rollups ends at raw readings.

import { api } from "./api.js";
import { $, el, fmtNum, items } from "./ui.js";

const LIMIT_COLOURS = { hh: "#d32f2f", ll: "#d32f2f", h: "#f57c00", l: "#f57c00" };
let chart = null;
let meta = null;
let window_ = null; // [start, end] in ms of what is shown
let tagsLoaded = "";

// [{name, value}] of the tag's alarm limits (ll, l, h, hh; null where the plant has none)
export function limitsOf(m) {
  return Object.entries(m?.limits ?? {})
    .filter(([, v]) => typeof v === "number" && Number.isFinite(v))
    .map(([name, value]) => ({ name: String(name).toUpperCase(), value }));
}

async function fillTags(hazardSource) {
  const select = $("trend-tag");
  if (tagsLoaded === (hazardSource ?? "*")) return;
  const { data } = await api("/api/v1/tags", { query: { hazard_source: hazardSource, limit: 5000 } });
  const list = items(data).filter((t) => t.kind !== "DISCRETE");
  select.replaceChildren(...list.map((t) => el("option", { value: t.key }, `${t.key} ${t.name ?? ""}`)));
  tagsLoaded = hazardSource ?? "*";
}

export async function showTrend(params) {
  await fillTags(params.get("hazard_source") || undefined);
  const select = $("trend-tag");
  const tag = params.get("tag");
  if (tag) {
    if (![...select.options].some((o) => o.value === tag)) select.append(el("option", { value: tag }, tag));
    select.value = tag;
  }
  if (!select.value) return;
  const range = $("trend-range");
  if ([...range.options].some((o) => o.value === params.get("range"))) range.value = params.get("range");
  const span = Number(range.value) * 1000;
  const end = Date.now();
  await draw(select.value, [end - span, end]);
}

export function setupTrend() {
  $("trend-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const tag = $("trend-tag").value;
    // through the hash, so the trend of a tag is a link (and the back button works)
    const range = $("trend-range").value;
    const next = `#trend?tag=${encodeURIComponent(tag)}&range=${range}`;
    if (location.hash === next) showTrend(new URLSearchParams({ tag, range }));
    else location.hash = next;
  });
  window.addEventListener("resize", () => chart?.setSize(size()));
}

function size() {
  const box = $("trend-chart");
  return { width: Math.max(320, box.clientWidth), height: 380 };
}

function columns(answer, tag) {
  const s = answer.series.find((x) => x.tag === tag) ?? {};
  const t = (s.time ?? []).map((x) => Date.parse(x) / 1000);
  const raw = Array.isArray(s.value);
  return { t, value: raw ? s.value : (s.avg ?? []), min: raw ? [] : (s.min ?? []), max: raw ? [] : (s.max ?? []), raw };
}

async function draw(tag, [start, end]) {
  window_ = [start, end];
  const info = $("trend-info");
  info.textContent = "查询中…";
  const [{ data: m }, { data: h }] = await Promise.all([
    api(`/api/v1/tags/${encodeURIComponent(tag)}`),
    api("/api/v1/history", {
      query: { tags: tag, start: new Date(start).toISOString(), end: new Date(end).toISOString(), bucket: "auto" },
    }),
  ]);
  meta = m;
  const col = columns(h, tag);
  const limits = limitsOf(m);
  const bucket = h.bucket_s ?? "raw";
  const box = $("trend-chart");
  box.dataset.tag = tag;
  box.dataset.points = String(col.t.length);
  box.dataset.bucket = String(bucket);
  box.dataset.limits = limits.map((l) => `${l.name}=${l.value}`).join(",");
  $("trend-title").textContent = `${tag} ${m.name ?? ""}${m.unit ? `（${m.unit}）` : ""}`;
  const latest = m.latest?.value;
  info.textContent = `${col.raw ? "原始数据" : `${bucket} 秒汇总`}，${col.t.length} 点${
    latest === undefined || latest === null ? "" : `，最新值 ${fmtNum(latest)} ${m.unit ?? ""}`
  }`;

  const series = [
    { label: "时间", value: (u, ts) => (ts == null ? "--" : new Date(ts * 1000).toLocaleString("zh-CN", { hour12: false })) },
    { label: col.raw ? "值" : "平均", stroke: "#1565c0", width: 1.5 },
  ];
  const data = [col.t, col.value];
  if (!col.raw) {
    series.push({ label: "最小", stroke: "#90caf9", width: 1, dash: [4, 3] }, { label: "最大", stroke: "#90caf9", width: 1, dash: [4, 3] });
    data.push(col.min, col.max);
  }
  const marks = limits.map((l) => l.value); // the limits are always in view
  const opts = {
    ...size(),
    series,
    scales: {
      x: { time: true, range: () => [window_[0] / 1000, window_[1] / 1000] },
      y: {
        range: (u, dmin, dmax) => {
          const all = [dmin, dmax, ...marks].filter(Number.isFinite);
          const a = Math.min(...all);
          const b = Math.max(...all);
          const pad = (b - a || 1) * 0.08;
          return [a - pad, b + pad];
        },
      },
    },
    axes: [{ values: (u, splits) => splits.map((ts) => label(ts, end - start)) }, { label: m.unit ?? "" }],
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      draw: [(u) => drawLimits(u, limits)],
      setSelect: [(u) => zoom(u, tag)],
    },
  };
  chart?.destroy();
  chart = new uPlot(opts, data, box);
}

function label(ts, spanMs) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return spanMs > 86400e3 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
}

function drawLimits(u, limits) {
  const { ctx, bbox } = u;
  ctx.save();
  ctx.font = `${12 * devicePixelRatio}px sans-serif`;
  let drawn = 0;
  for (const l of limits) {
    const y = Math.round(u.valToPos(l.value, "y", true));
    if (y < bbox.top || y > bbox.top + bbox.height) continue;
    ctx.strokeStyle = ctx.fillStyle = LIMIT_COLOURS[l.name.toLowerCase()] ?? "#7b1fa2";
    ctx.lineWidth = devicePixelRatio;
    ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(bbox.left, y);
    ctx.lineTo(bbox.left + bbox.width, y);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(`${l.name} ${fmtNum(l.value)}`, bbox.left + bbox.width - 4 * devicePixelRatio, y - 4 * devicePixelRatio);
    drawn++;
  }
  ctx.restore();
  u.root.parentElement.dataset.limitsDrawn = String(drawn); // what a test can check
}

function zoom(u, tag) {
  const { left, width } = u.select;
  if (width < 5) return;
  const a = u.posToVal(left, "x") * 1000;
  const b = u.posToVal(left + width, "x") * 1000;
  u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
  if (b - a < 1000) return;
  draw(tag, [a, b]).catch((err) => {
    $("trend-info").textContent = `查询失败：${err.message}`;
  });
}

// A live value of the shown tag extends the chart when its window ends now.
export function onValue(tag, time, value) {
  if (!chart || !meta || $("trend-chart").dataset.tag !== tag || !window_) return;
  if (Date.now() - window_[1] > 60_000) return;
  const t = Date.parse(time) / 1000;
  const d = chart.data.map((c) => [...c]);
  if (d[0].length && t <= d[0][d[0].length - 1]) return;
  d[0].push(t);
  d[1].push(value);
  for (let i = 2; i < d.length; i++) d[i].push(value);
  window_[1] = Math.max(window_[1], t * 1000);
  chart.setData(d);
  $("trend-chart").dataset.points = String(d[0].length);
}
