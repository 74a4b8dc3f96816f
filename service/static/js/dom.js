// A tiny element builder and formatting helpers shared by the pages.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export const ENDED = ["succeeded", "failed", "cancelled"];

export function statusBadge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

export function pct(value, digits = 2) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(digits)}%`;
}

export function seconds(total) {
  if (total === null || total === undefined || !isFinite(total)) return "—";
  total = Math.max(0, Math.round(total));
  const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), secs = total % 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${secs} s`;
  return `${secs} s`;
}

export function duration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function ago(iso) {
  const diff = (Date.now() - Date.parse(iso)) / 1000;
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

export function lrText(value) {
  return typeof value === "number" ? value.toPrecision(3) : String(value ?? "—");
}

/** A job's dataset as a person knows it: an uploaded one by the name it was given (`names`: id -> name; the
 * start of its id where the name is unknown), the others by theirs. */
export function datasetText(params, names = null) {
  const dataset = params.dataset || {};
  const subset = dataset.train_subset ? ` (${dataset.train_subset} train)` : "";
  const label = dataset.name === "uploaded" ? `${names?.get(dataset.id) ?? dataset.id?.slice(0, 8)} (uploaded)` : dataset.name;
  return `${label}${dataset.path ? `:${dataset.path}` : ""}${subset}`;
}

export function modelText(params) {
  const model = params.model || {};
  return `${model.name || "resnet18"} w${model.width ?? 64}`;
}

export function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

export function copyButton(label, text) {
  const button = h("button", { type: "button", class: "small" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy";
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

const LIGHTBOX = { width: 0.95, height: 0.9, bar: 48 }; // of the viewport; px of caption and close button

/** The larger view: the image as large as the viewport allows (scaled up too), never smaller than its
 * natural size where that fits. */
export function openLightbox(src, caption) {
  const dialog = document.getElementById("lightbox");
  const image = document.getElementById("lightbox-img");
  const fit = () => {
    if (!image.naturalWidth) return;
    const scale = Math.min((LIGHTBOX.width * innerWidth) / image.naturalWidth,
      (LIGHTBOX.height * innerHeight - LIGHTBOX.bar) / image.naturalHeight);
    image.style.width = `${Math.floor(image.naturalWidth * scale)}px`;
  };
  image.onload = fit;
  image.style.width = "";
  image.src = src;
  document.getElementById("lightbox-caption").textContent = caption;
  fit();
  window.addEventListener("resize", fit);
  dialog.addEventListener("close", () => window.removeEventListener("resize", fit), { once: true });
  dialog.showModal();
}

export function query(hashQuery) {
  return Object.fromEntries(new URLSearchParams(hashQuery || ""));
}

/** Saves `blob` as a file named `name`: the browser's download, from memory (no URL that needs the key). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // the download has read it by then
}
