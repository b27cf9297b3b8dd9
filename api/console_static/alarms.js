// The active alarms of the user's scope: loaded once the stream is connected (events meanwhile
// are held, then replayed in order over the list, so nothing falls between the two), then kept
// current by the stream's alarm events. Unacknowledged first, then priority, newest first; a
// new critical alarm beeps.

import { api } from "./api.js";
import { ACTIONS, openDialog } from "./dialogs.js";
import { $, PRIORITY, PRIORITY_RANK, STATUS, alarmName, el, fmtNum, fmtTime, items } from "./ui.js";

const SHOWN = new Set(["unacknowledged", "acknowledged", "returned_unacknowledged", "latched", "shelved"]);
const UNACKED = new Set(["unacknowledged", "returned_unacknowledged"]);
const ANNUNCIATING = new Set(["RAISED", "RERAISED"]);

export const alarms = new Map();
const listeners = new Set();
let me = null;
let loaded = false;
let early = []; // stream events that came before the list did

export function onAlarms(fn) {
  listeners.add(fn);
}

function changed() {
  for (const fn of listeners) fn();
}

export function isUnacked(a) {
  return a.acked === false || (a.acked === undefined && UNACKED.has(a.status));
}

// "<seq>.<n>" as a comparable pair; null for what has no id (a list row, a command's answer)
function position(id) {
  const [seq, n] = String(id ?? "").split(".").map(Number);
  return Number.isFinite(seq) && Number.isFinite(n) ? [seq, n] : null;
}

const before = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);

// A stream event (a transition: key, new_status, action, at, ...) applied to the list.
function apply(d, id, live) {
  const pos = position(id);
  const prev = alarms.get(d.key);
  if (pos && prev?.pos && before(pos, prev.pos)) return; // already seen
  const status = d.new_status;
  const known = Object.entries(d).filter(([, v]) => v !== null && v !== undefined); // an ack has no value
  const rec = { ...prev, ...Object.fromEntries(known), status, pos: pos ?? prev?.pos };
  if (ANNUNCIATING.has(d.action) || UNACKED.has(status)) rec.acked = false;
  else if (d.action === "ACKED" || status === "acknowledged") rec.acked = true;
  if (ANNUNCIATING.has(d.action)) rec.raised_at = d.at;
  if (d.action === "SUPERVISE") rec.supervised = d.detail ?? {}; // seen live; the list does not say
  rec.since = d.at ?? rec.since;
  if (!SHOWN.has(status)) {
    alarms.delete(d.key);
    return;
  }
  alarms.set(d.key, rec);
  if (live && ANNUNCIATING.has(d.action) && rec.priority === "critical") beep();
  if (rec.subject_name === undefined && !prev?.filling) {
    rec.filling = true;
    fillIn(d.key);
  }
}

async function fillIn(key) {
  // an event may carry only the transition: the row's labels come from the alarm's detail
  try {
    const { data } = await api(`/api/v1/alarms/${encodeURIComponent(key)}`);
    const now = alarms.get(key);
    if (now) alarms.set(key, { ...data.alarm, ...now, subject_name: data.alarm.subject_name ?? null });
    changed();
  } catch {
    /* the next event or reload fills it */
  }
}

export function onStreamAlarm(d, id) {
  if (!loaded) {
    early.push([d, id]);
    return;
  }
  apply(d, id, true);
  changed();
}

export function resetAlarms() {
  alarms.clear();
  loaded = false;
  early = [];
}

export async function loadAlarms(who) {
  me = who;
  const { data } = await api("/api/v1/alarms", { query: { active: true, limit: 1000 } });
  alarms.clear();
  for (const a of items(data)) alarms.set(a.key, a);
  loaded = true;
  for (const [d, id] of early) apply(d, id, true);
  early = [];
  changed();
}

export function sorted(filter = () => true) {
  const rank = (a) => [isUnacked(a) ? 0 : 1, a.status === "shelved" ? 1 : 0, PRIORITY_RANK[a.priority] ?? 9];
  return [...alarms.values()].filter(filter).sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return ra[i] - rb[i];
    return String(b.raised_at ?? b.since ?? "").localeCompare(String(a.raised_at ?? a.since ?? ""));
  });
}

const HANDLE = new Set(["enterprise_operator", "enterprise_admin", "admin"]);
const SUPERVISE = new Set(["bureau_duty", "admin"]);

// The actions this user may take on this alarm now (the engine decides; this only hides noise).
export function actionsFor(a) {
  const out = [];
  if (HANDLE.has(me.role)) {
    if (isUnacked(a)) out.push("ack");
    if (a.status === "latched") out.push("reset");
    out.push(a.status === "shelved" ? "unshelve" : "shelve", "feedback", "comment");
    if (a.supervised) out.push("respond");
  }
  if (SUPERVISE.has(me.role)) out.push("supervise");
  return out;
}

const LABEL = { ack: "确认", reset: "复位", shelve: "搁置", unshelve: "取消搁置", feedback: "反馈", comment: "备注" };

export function actionButtons(a) {
  const buttons = actionsFor(a).map((action) =>
    el(
      "button",
      {
        type: "button",
        class: action === "ack" || action === "supervise" ? "" : "ghost",
        dataset: { action },
        // the row changes by the stream's event of the transition, as for any other client
        onclick: () => openDialog(a, action, me),
      },
      LABEL[action] ?? ACTIONS[action].title,
    ),
  );
  // the last hour: the alarm's approach at fine resolution (the range select widens it)
  const trend = `#trend?tag=${encodeURIComponent(a.subject)}&range=3600`;
  if (a.subject) buttons.push(el("a", { href: trend, class: "trend-link" }, "趋势"));
  return buttons;
}

// The alarm's name, opening its detail (#alarm?key=...; the key percent-encoded as Grafana's links do).
export function detailLink(a) {
  return el("a", { href: `#alarm?key=${encodeURIComponent(a.key)}`, class: "detail-link" }, alarmName(a));
}

export function priorityCell(a) {
  return el("td", {}, el("span", { class: `prio prio-${a.priority}` }, PRIORITY[a.priority] ?? a.priority ?? ""));
}

function row(a) {
  return el(
    "tr",
    { class: `p-${a.priority}${isUnacked(a) ? " unacked" : ""}${a.status === "shelved" ? " shelved" : ""}`, dataset: { key: a.key } },
    priorityCell(a),
    el("td", { class: "status" }, STATUS[a.status] ?? a.status),
    el(
      "td",
      {},
      el("div", {}, detailLink(a), a.supervised ? el("span", { class: "supervised", title: a.supervised.text ?? "" }, "督办") : null),
      el("small", { class: "muted" }, a.key),
    ),
    el("td", {}, a.hazard_source),
    el("td", {}, a.enterprise),
    el("td", {}, `${fmtNum(a.value)} / ${fmtNum(a.limit)}`),
    el("td", {}, fmtTime(a.raised_at ?? a.since)),
    el("td", { class: "actions" }, actionButtons(a)),
  );
}

export function renderAlarms() {
  const list = sorted();
  $("alarm-rows").replaceChildren(...list.map(row));
  $("alarm-empty").hidden = list.length > 0;
  const open = list.filter(isUnacked).length;
  $("alarm-count").textContent = `共 ${list.length} 条，未确认 ${open} 条`;
}

// ---------------------------------------------------------------- sound

let audio = null;
let muted = localStorage.getItem("hw.mute") === "1";

export function setupSound(button) {
  const show = () => {
    button.textContent = muted ? "声音：关" : "声音：开";
    button.setAttribute("aria-pressed", String(muted));
  };
  button.dataset.beeps = "0";
  button.addEventListener("click", () => {
    muted = !muted;
    localStorage.setItem("hw.mute", muted ? "1" : "0");
    show();
  });
  // browsers start audio only after a user gesture: make the context on the first one
  const unlock = () => {
    audio ??= new AudioContext();
    audio.resume();
  };
  document.addEventListener("pointerdown", unlock, { once: true });
  document.addEventListener("keydown", unlock, { once: true });
  show();
}

function beep() {
  if (muted) return;
  const button = $("mute");
  button.dataset.beeps = String(Number(button.dataset.beeps) + 1); // what a test can see
  if (!audio) return;
  const t = audio.currentTime;
  for (let i = 0; i < 3; i++) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, t + i * 0.3);
    gain.gain.setValueAtTime(0, t + i * 0.3 + 0.18);
    osc.connect(gain).connect(audio.destination);
    osc.start(t + i * 0.3);
    osc.stop(t + i * 0.3 + 0.2);
  }
}
