// The API client: tokens in sessionStorage (gone with the tab), refreshed a minute before the
// access token expires; every call carries Authorization, never a token in a URL.

const KEY = "hw.tokens";
let refreshTimer = 0;
let onLoggedOut = () => {};

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI answers {"detail": "text"} or, for 422, a list of {loc, msg}.
function describe(status, detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("；");
  }
  if (detail && typeof detail === "object") return detail.reason || detail.detail || JSON.stringify(detail);
  return detail || `HTTP ${status}`;
}

function stored() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function keep(t) {
  const tokens = { access: t.access_token, refresh: t.refresh_token, expiresAt: Date.now() + t.expires_in * 1000 };
  sessionStorage.setItem(KEY, JSON.stringify(tokens));
  schedule(tokens);
}

function schedule(tokens) {
  clearTimeout(refreshTimer);
  const lead = Math.min(60_000, (tokens.expiresAt - Date.now()) / 5);
  refreshTimer = setTimeout(() => refresh().catch(() => logout()), Math.max(1000, tokens.expiresAt - Date.now() - lead));
}

export function accessToken() {
  return stored()?.access || null;
}

export function whenLoggedOut(fn) {
  onLoggedOut = fn;
}

export function resume() {
  const t = stored();
  if (t) schedule(t);
  return Boolean(t);
}

export async function login(username, password) {
  const r = await fetch("/api/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, r.status === 401 ? "用户名或密码错误" : body.detail);
  keep(body);
}

let refreshing = null;
export function refresh() {
  // one refresh at a time: the stream and several requests may all see a 401 together
  refreshing ??= (async () => {
    const t = stored();
    if (!t) throw new ApiError(401, "未登录");
    const r = await fetch("/api/v1/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: t.refresh }),
    });
    if (!r.ok) throw new ApiError(r.status, "登录已过期");
    keep(await r.json());
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

export function logout() {
  clearTimeout(refreshTimer);
  sessionStorage.removeItem(KEY);
  onLoggedOut();
}

// A JSON request; query values that are arrays repeat the parameter (tags=A&tags=B).
export async function api(path, { method = "GET", body, query, headers = {} } = {}, retried = false) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of [].concat(v)) url.searchParams.append(k, one);
  }
  const r = await fetch(url, {
    method,
    headers: {
      Accept: "application/json",
      Authorization: `Bearer ${accessToken()}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && !retried) {
    try {
      await refresh();
    } catch {
      logout();
      throw new ApiError(401, "登录已过期");
    }
    return api(path, { method, body, query, headers }, true);
  }
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok && r.status !== 202) throw new ApiError(r.status, data?.detail ?? data);
  return { status: r.status, data };
}
