// The bureau's view: its jurisdiction's enterprises grouped by county (hazard sources, active
// alarms by priority, unacknowledged), and the active alarms there with the 督办 action.
// Clicking an enterprise narrows the alarm table to it. With Grafana, each enterprise and alarm
// links to its hazard source board.

import { api } from "./api.js";
import { actionButtons, detailLink, isUnacked, priorityCell, sorted } from "./alarms.js";
import { countBadges, counts, statusOf } from "./sources.js";
import { $, STATUS, el, fmtTime, grafanaLink, items } from "./ui.js";

let picked = null;

// the enterprise's Grafana board; a click on it opens the board, it does not pick the row
function boardLink(code) {
  const link = grafanaLink(code);
  link?.addEventListener("click", (ev) => ev.stopPropagation());
  return link ? [" ", link] : null;
}

function enterpriseRow(e) {
  const c = counts(e);
  const online = e.online_rate;
  return el(
    "tr",
    {
      class: `st-${statusOf(c)}${picked === e.code ? " picked" : ""}`,
      dataset: { code: e.code },
      onclick: () => {
        picked = picked === e.code ? null : e.code;
        renderBureau();
      },
    },
    el("td", {}, el("strong", {}, e.name), el("small", { class: "muted" }, ` ${e.code}`), boardLink(e.code)),
    el("td", {}, e.hazard_sources),
    el("td", {}, c.total),
    el("td", {}, c.unacked),
    el("td", { class: "badges" }, countBadges(c)),
    el("td", {}, online === undefined || online === null ? "—" : `${(online * 100).toFixed(1)}%`),
  );
}

function alarmRow(a) {
  return el(
    "tr",
    { class: `p-${a.priority}${isUnacked(a) ? " unacked" : ""}`, dataset: { key: a.key } },
    priorityCell(a),
    el("td", { class: "status" }, STATUS[a.status] ?? a.status),
    el("td", {}, el("div", {}, detailLink(a)), el("small", { class: "muted" }, a.key)),
    el("td", {}, a.enterprise),
    el("td", {}, fmtTime(a.raised_at ?? a.since)),
    el("td", { class: "actions" }, actionButtons(a), grafanaLink(a.enterprise, a.hazard_source)),
  );
}

let enterprises = [];

export async function loadBureau() {
  const { data } = await api("/api/v1/enterprises");
  enterprises = items(data);
  renderBureau();
}

export function renderBureau() {
  const byCounty = new Map();
  for (const e of enterprises) {
    if (!byCounty.has(e.county)) byCounty.set(e.county, []);
    byCounty.get(e.county).push(e);
  }
  $("bureau-counties").replaceChildren(
    ...[...byCounty].map(([county, list]) => {
      const total = list.reduce((n, e) => n + counts(e).total, 0);
      return el(
        "section",
        { class: "county", dataset: { county } },
        el("h3", {}, `${county}（${list.length} 家企业，活动报警 ${total} 条）`),
        el(
          "table",
          { class: "enterprises" },
          el("thead", {}, el("tr", {}, ["企业", "危险源", "活动报警", "未确认", "级别分布", "在线率"].map((h) => el("th", {}, h)))),
          el("tbody", {}, list.map(enterpriseRow)),
        ),
      );
    }),
  );
  $("bureau-alarms").replaceChildren(...sorted((a) => !picked || a.enterprise === picked).map(alarmRow));
}
