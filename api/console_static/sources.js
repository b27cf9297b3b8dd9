// The hazard source overview: one card per source in scope with its grade, a status colour (the
// highest priority among its active alarms; green when none), its active alarm counts, and links
// to its trend and (with Grafana) its Grafana board.

import { api } from "./api.js";
import { $, GRADES, PRIORITY, el, grafanaLink, items } from "./ui.js";

const ORDER = ["critical", "high", "medium", "low"];
const KINDS = { PRODUCTION: "生产装置", STORAGE: "储存设施" };

// an enterprise's or hazard source's active alarm counts ({critical, ..., total, unacknowledged})
export function counts(x) {
  const c = x.alarms ?? {};
  return {
    by: Object.fromEntries(ORDER.map((p) => [p, Number(c[p] ?? 0)])),
    total: Number(c.total ?? 0),
    unacked: Number(c.unacknowledged ?? 0),
  };
}

// the worst active priority, or normal
export function statusOf(c) {
  return ORDER.find((p) => c.by[p] > 0) ?? "normal";
}

export function countBadges(c) {
  return ORDER.filter((p) => c.by[p] > 0).map((p) => el("span", { class: `prio prio-${p}` }, `${PRIORITY[p]} ${c.by[p]}`));
}

function card(s) {
  const c = counts(s);
  const status = statusOf(c);
  const online = s.online_rate;
  return el(
    "article",
    { class: `card source st-${status}`, dataset: { code: s.code } },
    el("header", {}, el("strong", {}, s.name), el("span", { class: "grade" }, GRADES[s.grade] ?? `${s.grade} 级`)),
    el("p", { class: "muted" }, `${s.code} · ${s.enterprise} · ${KINDS[s.kind] ?? s.kind}${s.r ? ` · R=${s.r}` : ""}`),
    el("p", {}, status === "normal" ? "运行正常" : `活动报警 ${c.total} 条，未确认 ${c.unacked} 条`),
    el("p", { class: "badges" }, countBadges(c)),
    online === undefined || online === null ? null : el("p", { class: "muted" }, `数据在线率 ${(online * 100).toFixed(1)}%`),
    el(
      "p",
      { class: "links" },
      el("a", { href: `#trend?hazard_source=${encodeURIComponent(s.code)}` }, "查看趋势"),
      grafanaLink(s.enterprise, s.code),
    ),
  );
}

export async function renderSources() {
  const { data } = await api("/api/v1/hazard-sources");
  $("source-cards").replaceChildren(...items(data).map(card));
}
