// Small DOM helpers and the console's Chinese labels (no innerHTML with data: text nodes only).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

export const PRIORITY = { critical: "紧急", high: "高", medium: "中", low: "低" };
export const PRIORITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };

export const STATUS = {
  normal: "正常",
  unacknowledged: "未确认",
  acknowledged: "已确认",
  returned_unacknowledged: "已恢复未确认",
  latched: "锁存",
  shelved: "已搁置",
  suppressed: "已抑制",
  out_of_service: "已停用",
};

export const CAUSES = {
  process_upset: "工艺波动",
  instrument_fault: "仪表故障",
  false_alarm: "误报",
  maintenance: "检维修",
  leak: "泄漏",
  other: "其他",
};

export const GRADES = { 1: "一级", 2: "二级", 3: "三级", 4: "四级" };

export const ROLES = {
  bureau_duty: "监管值班",
  enterprise_operator: "企业操作员",
  enterprise_admin: "企业管理员",
  engineer: "工程师",
  approver: "审批人",
  admin: "系统管理员",
};

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString("zh-CN", { hour12: false });
}

export function fmtNum(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return "—";
  return Number(v).toLocaleString("zh-CN", { maximumFractionDigits: 3 });
}

// A datetime-local input's value as ISO 8601 with the browser's offset (the API refuses naive times).
export function withOffset(local) {
  const d = new Date(local);
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
  return `${local.length === 16 ? `${local}:00` : local}${sign}${pad(off / 60)}:${pad(off % 60)}`;
}

export function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

// The rows of a list answer: a plain array, or a page's items.
export function items(data) {
  return Array.isArray(data) ? data : (data?.items ?? []);
}

// How alarm lists name an alarm: the tag's name and the condition (液位 高高报), else its key.
export function alarmName(a) {
  if (a.subject_name) return `${a.subject_name} ${a.condition ?? a.kind ?? ""}`.trim();
  return a.key;
}

// Grafana (settings.grafana.url, told by /api/v1/auth/me): "" hides every link to its boards.
let grafanaUrl = "";

export function setGrafana(url) {
  grafanaUrl = url ?? "";
}

// A link to Grafana's hazard source board (uid hw-hazard-source) in a new tab; without a hazard
// source, the enterprise's (the board picks its first). null when there is no Grafana.
export function grafanaLink(enterprise, hazardSource) {
  if (!grafanaUrl || !enterprise) return null;
  const query = [`var-enterprise=${encodeURIComponent(enterprise)}`];
  if (hazardSource) query.push(`var-hazard_source=${encodeURIComponent(hazardSource)}`);
  const href = `${grafanaUrl}/d/hw-hazard-source/?${query.join("&")}`;
  return el("a", { href, class: "grafana-link", target: "_blank", rel: "noopener" }, "Grafana 看板");
}
