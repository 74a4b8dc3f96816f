// The HTTP API with the user's key: every data call goes through `api` (JSON) or `blobUrl` (files).
// A 401 opens the key prompt, stores the key in localStorage and retries; the key never enters a URL.

const KEY = "lrcam.apiKey";
let asking = null; // one prompt at a time, shared by every call that got a 401

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

export function storedKey() {
  return localStorage.getItem(KEY);
}

export function askKey(reason) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("key-dialog");
      dialog.oncancel = (event) => event.preventDefault(); // Escape would leave every waiting call hanging
      document.getElementById("key-reason").textContent = reason;
      const form = document.getElementById("key-form");
      const input = document.getElementById("key-input");
      input.value = "";
      form.onsubmit = () => {
        localStorage.setItem(KEY, input.value.trim());
        document.getElementById("key-button").hidden = false;
        asking = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return asking;
}

async function send(path, { method = "GET", json, body } = {}) {
  for (;;) {
    const headers = {};
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    const response = await fetch(path, { method, headers, body: payload });
    if (response.status !== 401) return response;
    const detail = String((await response.json().catch(() => ({}))).detail || "missing API key");
    // the server's words, less the header they name (this page sends it): what is wrong, in plain words
    const reason = detail.startsWith("wrong API key") ? "wrong API key: the key this browser kept was refused."
      : detail.startsWith("missing API key") ? "missing API key: this server answers only with its key." : detail;
    await askKey(reason);
  }
}

async function check(response) {
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    /* not JSON */
  }
  throw new ApiError(response.status, detail);
}

export async function api(path, options) {
  return (await check(await send(path, options))).json();
}

/** A call answered with no body (204), e.g. a DELETE. */
export async function apiNoContent(path, options) {
  await check(await send(path, options));
}

const blobs = new Map(); // artifact path -> object URL (artifacts never change once registered)

export async function blobUrl(path) {
  if (!blobs.has(path)) {
    const response = await check(await send(path));
    blobs.set(path, URL.createObjectURL(await response.blob()));
  }
  return blobs.get(path);
}

export async function artifactJson(path) {
  return (await check(await send(path))).json();
}

/** A text answer (a job's log, a model card). */
export async function apiText(path) {
  return (await check(await send(path))).text();
}

/** A file of the API as a Blob and the name its Content-Disposition gives (else `fallback`). */
export async function fetchFile(path, fallback) {
  const response = await check(await send(path));
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = disposition.match(/filename\*?=(?:UTF-8'')?"?([^";]+)"?/i)?.[1];
  return { blob: await response.blob(), name: name ? decodeURIComponent(name) : fallback };
}

/** The uploaded datasets' names by id (GET /datasets): jobs show their dataset by the name it was given. */
export async function uploadedNames() {
  const { uploaded = [] } = await api("/datasets");
  return new Map(uploaded.map((d) => [d.id, d.name]));
}
