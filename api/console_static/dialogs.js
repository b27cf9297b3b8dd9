// The alarm command dialogs (ack, reset, shelve, feedback, comment, supervise, respond): each
// POSTs /api/v1/alarms/{alarm}/{action} with one Idempotency-Key per opening (a double click is
// one command) and shows what came of it: the new state, pending, or the refusal's reason.

import { api } from "./api.js";
import { $, CAUSES, STATUS, alarmName, el, localInput, withOffset } from "./ui.js";

export const ACTIONS = {
  ack: { title: "确认报警", fields: [["comment", "备注", "textarea", false]] },
  reset: { title: "复位报警", fields: [["comment", "备注", "textarea", false]] },
  shelve: {
    title: "搁置报警",
    fields: [
      ["minutes", "搁置时长（分钟）", "minutes", true],
      ["reason", "搁置原因", "textarea", true],
    ],
  },
  unshelve: { title: "取消搁置", fields: [] },
  feedback: {
    title: "处置反馈",
    fields: [
      ["cause_category", "原因类别", "cause", true],
      ["action", "处置措施", "textarea", true],
      ["handler", "处置人", "text", true],
      ["handled_at", "处置时间", "datetime", false],
    ],
  },
  comment: { title: "添加备注", fields: [["text", "备注", "textarea", true]] },
  supervise: {
    title: "督办",
    fields: [
      ["text", "督办要求", "textarea", true],
      ["due_at", "办结期限", "due", true],
    ],
  },
  respond: { title: "督办回复", fields: [["text", "回复内容", "textarea", true]] },
};

function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function input(name, kind, required, me) {
  const common = { name, id: `f-${name}`, required };
  switch (kind) {
    case "textarea":
      return el("textarea", { ...common, rows: 3, maxlength: 2000 });
    case "minutes":
      return el("input", { ...common, type: "number", min: 1, max: 10080, step: 1, value: 60 });
    case "cause":
      return el("select", common, Object.entries(CAUSES).map(([v, zh]) => el("option", { value: v }, zh)));
    case "datetime":
      return el("input", { ...common, type: "datetime-local" });
    case "due":
      return el("input", { ...common, type: "datetime-local", value: localInput(new Date(Date.now() + 2 * 3600e3)) });
    default:
      return el("input", { ...common, type: "text", maxlength: 2000, value: name === "handler" ? me.display_name : "" });
  }
}

function args(form, spec) {
  const out = {};
  for (const [name, , kind] of spec.fields) {
    const raw = form.elements[name].value.trim();
    if (!raw) continue;
    if (kind === "minutes") out[name] = Number(raw);
    else if (kind === "datetime" || kind === "due") out[name] = withOffset(raw);
    else out[name] = raw;
  }
  return out;
}

// A command's outcome as text and class: applied (the new state), rejected (why) or pending.
function explain(data) {
  if (data.status === "pending") return [`已提交，等待报警引擎处理（指令 ${data.command_id}）`, "pending"];
  if (data.status === "rejected") return [`被拒绝：${data.reason ?? ""}`, "refused"];
  const after = data.alarm_status;
  return [`已执行${after ? `：当前状态 ${STATUS[after] ?? after}` : ""}`, "ok"];
}

// A pending command (the engine busy or down): asked after every 2 s while the dialog shows it.
async function follow(mine, commandId, show) {
  for (let i = 0; i < 30 && current === mine; i++) {
    await new Promise((ok) => setTimeout(ok, 2000));
    if (current !== mine) return;
    const { data } = await api(`/api/v1/commands/${commandId}`);
    if (data.status !== "pending") {
      show(data);
      return;
    }
  }
}

function refusal(err) {
  const prefix = { 403: "无权执行", 404: "报警不存在或不在您的范围内", 409: "被拒绝", 422: "输入有误" }[err.status];
  return prefix ? `${prefix}：${err.message}` : `失败：${err.message}`;
}

let current = null;

// Open the dialog of `action` for `alarm` (`me`: the user, for defaults such as the handler).
export function openDialog(alarm, action, me) {
  const spec = ACTIONS[action];
  const dialog = $("dialog");
  const form = $("dialog-form");
  const ok = $("dialog-ok");
  const result = $("dialog-result");
  current = { key: uuid4(), alarm, action };
  $("dialog-title").textContent = spec.title;
  $("dialog-subject").textContent = `${alarmName(alarm)}（${alarm.key}）`;
  $("dialog-fields").replaceChildren(
    ...spec.fields.map(([name, label, kind, required]) =>
      el("label", { for: `f-${name}` }, label, required ? " *" : "", input(name, kind, required, me)),
    ),
  );
  result.textContent = "";
  result.className = "";
  ok.disabled = false;
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const mine = current;
    ok.disabled = true;
    result.className = "";
    result.textContent = "提交中…";
    try {
      const r = await api(`/api/v1/alarms/${encodeURIComponent(alarm.key)}/${action}`, {
        method: "POST",
        body: args(form, spec),
        headers: { "Idempotency-Key": mine.key },
      });
      if (current !== mine) return;
      const show = (data) => {
        [result.textContent, result.className] = explain(data);
      };
      show(r.data);
      if (r.data.status === "pending") follow(mine, r.data.command_id, show).catch(() => {});
    } catch (err) {
      if (current !== mine) return;
      result.textContent = refusal(err);
      result.className = "refused";
      ok.disabled = false;
      // a rejected command is done: trying again is a new one; anything else retries the same key
      if (err.status === 409) current = { ...mine, key: uuid4() };
    }
  };
  $("dialog-cancel").onclick = () => {
    current = null; // stops following a pending command
    dialog.close();
  };
  dialog.showModal();
}
