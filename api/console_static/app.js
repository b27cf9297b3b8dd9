// The console's entry: login, then the views (#alarms, #alarm?key=, #sources, #trend?tag=, #bureau)
// over one live stream. No framework, no build: ES modules served as they are. A link opened
// before login (Grafana's to an alarm) keeps its hash through the login screen: the view it
// names shows once logged in.

import * as auth from "./api.js";
import { loadAlarms, onAlarms, onStreamAlarm, renderAlarms, resetAlarms, setupSound } from "./alarms.js";
import { loadBureau, renderBureau } from "./bureau.js";
import { alarmChanged, leaveAlarm, showAlarm } from "./detail.js";
import { renderSources } from "./sources.js";
import { openStream } from "./stream.js";
import { onValue, setupTrend, showTrend } from "./trend.js";
import { $, ROLES, setGrafana } from "./ui.js";

const BUREAU = new Set(["bureau_duty", "admin"]);
let me = null;
let stream = null;
let view = "alarms";
let countsDue = 0;

function showLogin() {
  stream?.close();
  stream = null;
  me = null;
  resetAlarms();
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-form").elements.username.focus();
}

async function start() {
  ({ data: me } = await auth.api("/api/v1/auth/me"));
  setGrafana(me.grafana_url);
  $("login").hidden = true;
  $("main").hidden = false;
  $("who").textContent = `${me.display_name}（${ROLES[me.role] ?? me.role}${me.enterprise ? ` · ${me.enterprise}` : ""}${me.county ? ` · ${me.county}` : ""}）`;
  for (const a of document.querySelectorAll("[data-bureau]")) a.hidden = !BUREAU.has(me.role);
  let connected;
  const subscribed = new Promise((ok) => {
    connected = ok;
    setTimeout(ok, 5000); // the stream down: show the list anyway (it reconnects by itself)
  });
  stream = openStream({
    alarm: (d, id) => {
      onStreamAlarm(d, id);
      if (view === "alarm") alarmChanged(d.key);
    },
    value: (d) => {
      for (const v of d.values) onValue(v.tag, v.time, v.value);
    },
    status: (s) => {
      const link = $("link");
      link.textContent = s === "open" ? "● 实时" : "○ 重连中";
      link.className = `link ${s}`;
      if (s === "open") connected();
    },
    resync: () => {
      resetAlarms();
      loadAlarms(me).catch((err) => console.error("alarms:", err));
      if (view === "alarm") alarmChanged(null); // what the stream missed meanwhile
    },
  });
  await subscribed; // events from here on are held until the list is in, then replayed over it
  await loadAlarms(me);
  route();
}

function route() {
  const hash = location.hash.slice(1) || "alarms";
  const at = hash.indexOf("?");
  const [name, query] = at < 0 ? [hash, ""] : [hash.slice(0, at), hash.slice(at + 1)];
  view = document.getElementById(`view-${name}`) ? name : "alarms";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  const tab = view === "alarm" ? "alarms" : view; // an alarm's detail belongs to the alarm list
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === tab);
  const params = new URLSearchParams(query);
  if (view !== "alarm") leaveAlarm();
  const shown = {
    alarms: async () => renderAlarms(),
    alarm: () => showAlarm(params),
    sources: renderSources,
    trend: () => showTrend(params),
    bureau: loadBureau,
  }[view];
  shown().catch((err) => console.error(`${view}:`, err));
}

onAlarms(() => {
  renderAlarms();
  if (view === "bureau") renderBureau();
  if (view === "sources" || view === "bureau") {
    // their counts come from the server: one reload per second of alarm traffic at most
    const reload = view === "sources" ? renderSources : loadBureau;
    clearTimeout(countsDue);
    countsDue = setTimeout(() => reload().catch(() => {}), 1000);
  }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  $("login-error").textContent = "";
  try {
    await auth.login(f.username.value.trim(), f.password.value);
    f.password.value = "";
    await start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});
$("logout").addEventListener("click", () => auth.logout());
window.addEventListener("hashchange", () => me && route());
auth.whenLoggedOut(showLogin);
setupSound($("mute"));
setupTrend();

if (auth.resume()) start().catch(showLogin);
else showLogin();
