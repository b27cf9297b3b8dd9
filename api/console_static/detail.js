// One alarm's detail (#alarm?key=<percent-encoded key>), the page Grafana's alarm tables link to:
// its state, the action buttons the list offers, the rationalization (处置说明), the journal and
// who was notified (recipients masked by the API). Reloaded when a stream event names the alarm.
// An unknown key and one outside the user's scope are the same 404 to the API, and to the page.

import { api } from "./api.js";
import { actionButtons } from "./alarms.js";
import { $, CAUSES, PRIORITY, STATUS, alarmName, el, fmtNum, fmtTime, grafanaLink } from "./ui.js";

const EVENTS = {
  RAISED: "报警",
  RERAISED: "再次报警",
  RETURNED: "恢复待确认",
  CLEARED: "消警",
  ACKED: "确认",
  RESET: "复位",
  SHELVED: "搁置",
  UNSHELVED: "取消搁置",
  SHELVE_EXPIRED: "搁置到期",
  SUPPRESSED: "抑制",
  UNSUPPRESSED: "解除抑制",
  REMOVED: "停用",
  RESTORED: "恢复投用",
  CONDITION: "状态变化（未显示）",
  COMMENT: "备注",
  FEEDBACK: "处置反馈",
  SUPERVISE: "督办",
  RESPOND: "督办回复",
};

const DELIVERY = {
  planned: "待发送",
  retry: "待重试",
  sending: "发送中",
  sent: "已发送",
  failed: "发送失败",
  stopped: "已停止",
  unconfirmed: "未确认送达",
};

const CHANNELS = { sms: "短信", voice: "语音", email: "邮件", webhook: "Webhook", mqtt: "MQTT", console: "控制台" };

const NOT_FOUND = "报警不存在或无权查看";
let shownKey = null; // the key of the request last made: an older answer arriving late is dropped
let reloadDue = 0;

// A journal row's arguments as a sentence (a note's text, a shelving's reason, a feedback).
function describe(action, d) {
  if (!d || typeof d !== "object") return "";
  if (action === "FEEDBACK") {
    const when = d.handled_at ? `，${fmtTime(d.handled_at)}` : "";
    return `${CAUSES[d.cause_category] ?? d.cause_category ?? ""}：${d.action ?? ""}（处置人 ${d.handler ?? ""}${when}）`;
  }
  if (action === "SUPERVISE") return `${d.text ?? ""}（办结期限 ${fmtTime(d.due_at)}）`;
  const parts = [d.reason_zh ?? d.reason, d.comment, d.text, d.minutes ? `${d.minutes} 分钟` : null];
  const text = parts.filter((p) => p !== undefined && p !== null && p !== "").join("；");
  return text || (Object.keys(d).length ? JSON.stringify(d) : "");
}

function transition(j) {
  if (!j.old_status && !j.new_status) return "";
  if (j.old_status === j.new_status) return STATUS[j.new_status] ?? j.new_status;
  return `${STATUS[j.old_status] ?? j.old_status ?? ""} → ${STATUS[j.new_status] ?? j.new_status ?? ""}`;
}

function fact(label, ...value) {
  return [el("dt", {}, label), el("dd", {}, ...value)];
}

function facts(a) {
  const rows = [
    fact("级别", el("span", { class: `prio prio-${a.priority}` }, PRIORITY[a.priority] ?? a.priority)),
    fact("状态", el("span", { class: "status" }, STATUS[a.status] ?? a.status)),
    fact("报警", alarmName(a)),
    fact("企业", a.enterprise),
    fact("危险源", a.hazard_source),
    a.unit ? fact("装置", a.unit) : [],
    fact(a.unit ? "位号" : "联锁", a.subject),
    fact("值 / 限值", `${fmtNum(a.value)} / ${fmtNum(a.limit)}`),
    fact("报警时间", fmtTime(a.raised_at) || "—"),
    fact("状态变化", fmtTime(a.since)),
    a.acked_by ? fact("确认", `${a.acked_by}，${fmtTime(a.acked_at)}`) : [],
    a.shelved_until ? fact("搁置至", fmtTime(a.shelved_until)) : [],
    a.by_whom || a.reason ? fact("原因", [a.reason, a.by_whom ? `（${a.by_whom}）` : ""].join("")) : [],
    a.latching ? fact("锁存", "需复位") : [],
  ];
  return el("dl", { class: "facts" }, rows.flat());
}

function rationale(r) {
  if (!r) return el("p", { class: "muted", id: "alarm-rationale" }, "无处置说明（配置中已无此报警）");
  if (!r.cause && !r.consequence && !r.action) {
    // neither the reference folder's rationalization.yaml nor the plant says anything of it
    return el("p", { class: "muted", id: "alarm-rationale" }, "未配置处置说明");
  }
  return el(
    "dl",
    { class: "facts", id: "alarm-rationale" },
    fact("可能原因", r.cause || "—"),
    fact("后果", r.consequence || "—"),
    fact("处置措施", r.action || "—"),
    fact("响应时限", r.response_s === null || r.response_s === undefined ? "—" : `${fmtNum(r.response_s)} 秒`),
    fact("来源", r.source),
  );
}

function table(id, heads, rows, empty) {
  if (!rows.length) return el("p", { class: "muted", id }, empty);
  return el(
    "table",
    { class: "detail", id },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

function journalRow(j) {
  return el(
    "tr",
    { dataset: { action: j.action, id: j.id } },
    el("td", {}, fmtTime(j.at)),
    el("td", {}, EVENTS[j.action] ?? j.action),
    el("td", {}, transition(j)),
    el("td", {}, j.value === null && j.limit === null ? "" : `${fmtNum(j.value)} / ${fmtNum(j.limit)}`),
    el("td", {}, j.actor === "engine" ? "报警引擎" : j.actor),
    el("td", {}, describe(j.action, j.detail)),
  );
}

function deliveryRow(d) {
  const [grouped, after] = d.state.split(" → ");
  const state = after ? `合并发送，${DELIVERY[after] ?? after}` : (DELIVERY[grouped] ?? grouped);
  return el(
    "tr",
    { dataset: { state: d.state } },
    el("td", {}, fmtTime(d.sent_at ?? d.due_at)),
    el("td", {}, d.step ? `第 ${d.step} 级升级` : "即时"),
    el("td", {}, d.receiver, d.person ? el("small", { class: "muted" }, ` ${d.person}`) : null),
    el("td", {}, CHANNELS[d.channel] ?? d.channel),
    el("td", {}, d.recipient),
    el("td", {}, state, d.reason ? el("small", { class: "muted" }, ` ${d.reason}`) : null),
    el("td", {}, d.report ?? ""),
  );
}

function render(data) {
  const a = data.alarm;
  // the list learns of a supervision from the stream only; the journal says so here
  const supervise = [...data.journal].reverse().find((j) => j.action === "SUPERVISE");
  const alarm = supervise ? { ...a, supervised: supervise.detail ?? {} } : a;
  const board = grafanaLink(a.enterprise, a.hazard_source);
  $("alarm-title").textContent = alarmName(a);
  $("alarm-detail").replaceChildren(
    el("div", { class: "toolbar actions", id: "alarm-actions" }, actionButtons(alarm), board),
    el("section", { class: `card detail-state p-${a.priority}` }, facts(a)),
    el("h3", {}, "处置说明"),
    el("section", { class: "card" }, rationale(data.rationalization)),
    el("h3", {}, "报警日志 ", el("small", { class: "muted" }, `最近 ${data.journal.length} 条`)),
    table(
      "alarm-journal",
      ["时间", "事件", "状态", "值 / 限值", "操作人", "说明"],
      data.journal.map(journalRow),
      "无日志",
    ),
    el("h3", {}, "通知记录"),
    table(
      "alarm-deliveries",
      ["时间", "级次", "接收组", "渠道", "接收方", "状态", "回执"],
      data.deliveries.map(deliveryRow),
      "未发送通知",
    ),
  );
}

function missing(text) {
  $("alarm-title").textContent = "";
  $("alarm-detail").replaceChildren(el("p", { class: "error", id: "alarm-missing", role: "alert" }, text));
}

// Show the alarm the route names (params: the hash's query, key percent-encoded in it).
export async function showAlarm(params) {
  const key = params.get("key") ?? "";
  shownKey = key;
  $("alarm-key").textContent = key;
  if (!key) {
    missing(NOT_FOUND);
    return;
  }
  try {
    const { data } = await api(`/api/v1/alarms/${encodeURIComponent(key)}`);
    if (shownKey === key) render(data);
  } catch (err) {
    if (shownKey !== key) return;
    // 422: a key no alarm can have (control characters, too long): not found either
    if (err.status === 404 || err.status === 422) missing(NOT_FOUND);
    else missing(`读取报警失败：${err.message}`);
  }
}

// A stream event about `key` (null: about any, as after a resync): reload the detail if it is the
// one shown (a burst of events is one reload).
export function alarmChanged(key) {
  if (shownKey === null || (key !== null && key !== shownKey)) return;
  const shown = shownKey;
  clearTimeout(reloadDue);
  reloadDue = setTimeout(() => {
    if (shownKey === shown) showAlarm(new URLSearchParams({ key: shown })).catch(() => {});
  }, 200);
}

// Leaving the view: late answers and events no longer redraw it.
export function leaveAlarm() {
  shownKey = null;
  clearTimeout(reloadDue);
}
