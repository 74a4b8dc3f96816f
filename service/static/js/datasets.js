// Datasets: upload an archive or a folder (archived here, as a tar, without copying the files), follow
// its import, then its per-class counts, a sample grid, the skipped files and "Train on this".

import { api, apiNoContent, askKey, blobUrl, storedKey } from "./api.js";
import { ago, clear, errorBox, h, statusBadge } from "./dom.js";

const IMBALANCE = 3; // a class this many times larger than the smallest one gets a warning
const ARCHIVES = ".zip,.tar,.tgz,.tar.gz,application/zip,application/x-tar,application/gzip";

// ---- a folder as a tar (POSIX ustar), built from Blob slices: the browser streams the files ---------

const encoder = new TextEncoder();

function field(header, offset, length, text) {
  header.set(encoder.encode(text).slice(0, length), offset);
}

function octal(value, length) {
  return value.toString(8).padStart(length - 1, "0");
}

/** The 512-byte ustar header of a regular file; names over 100 bytes use the 155-byte prefix. */
export function tarHeader(name, size, mtime) {
  const header = new Uint8Array(512);
  let prefix = "";
  if (encoder.encode(name).length > 100) {
    const cut = name.lastIndexOf("/", 155);
    if (cut <= 0 || encoder.encode(name.slice(cut + 1)).length > 100) throw new Error(`file name too long for a tar: ${name}`);
    [prefix, name] = [name.slice(0, cut), name.slice(cut + 1)];
  }
  field(header, 0, 100, name);
  field(header, 100, 8, "0000644");
  field(header, 108, 8, "0000000");
  field(header, 116, 8, "0000000");
  field(header, 124, 12, octal(size, 12));
  field(header, 136, 12, octal(Math.floor(mtime / 1000), 12));
  field(header, 148, 8, "        "); // the checksum counts its own field as spaces
  field(header, 156, 1, "0");
  field(header, 257, 6, "ustar");
  field(header, 263, 2, "00");
  field(header, 345, 155, prefix);
  const sum = header.reduce((total, byte) => total + byte, 0);
  field(header, 148, 8, `${octal(sum, 7)}\0`);
  return header;
}

/** The files of a folder picked with webkitdirectory, as one tar Blob (hidden files left out). */
export function tarOf(files) {
  const parts = [];
  for (const file of files) {
    const name = file.webkitRelativePath || file.name;
    if (name.split("/").some((part) => part.startsWith("."))) continue;
    parts.push(tarHeader(name, file.size, file.lastModified || Date.now()), file);
    if (file.size % 512) parts.push(new Uint8Array(512 - (file.size % 512)));
  }
  if (!parts.length) throw new Error("the folder holds no files");
  parts.push(new Uint8Array(1024)); // the end: two zero blocks
  return new Blob(parts, { type: "application/x-tar" });
}

// ---- the upload, with progress (fetch cannot report an upload's progress; XMLHttpRequest can) -------

function send(form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/datasets");
    const key = storedKey();
    if (key) request.setRequestHeader("Authorization", `Bearer ${key}`);
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onload = () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
      resolve({ status: request.status, body });
    };
    request.onerror = () => reject(new Error("the upload failed: the connection was lost"));
    request.send(form);
  });
}

async function uploadArchive(blob, filename, fields, onProgress) {
  for (;;) {
    const form = new FormData();
    Object.entries(fields).forEach(([name, value]) => value !== "" && form.append(name, value));
    form.append("file", blob, filename);
    const { status, body } = await send(form, onProgress);
    if (status === 401) {
      await askKey(`${body.detail || "API key needed"}. Enter the server's API_KEY: it is kept in this browser's storage.`);
      continue;
    }
    if (status !== 202) {
      const detail = Array.isArray(body.detail)
        ? body.detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("\n") : body.detail;
      throw new Error(`${status}: ${detail || "the upload was refused"}`);
    }
    return body;
  }
}

// ---- pages ----------------------------------------------------------------------------------------

function total(counts, split) {
  return Object.values(counts?.[split] || {}).reduce((a, b) => a + b, 0);
}

function uploadCard() {
  const name = h("input", { type: "text", id: "dataset-name", placeholder: "default: the file's or folder's name", maxlength: 100 });
  const fraction = h("input", { type: "number", id: "test-fraction", value: "0.2", min: "0.05", max: "0.5", step: "0.05" });
  const archive = h("input", { type: "file", id: "archive-file", accept: ARCHIVES, hidden: true });
  const folder = h("input", { type: "file", id: "folder-files", webkitdirectory: true, multiple: true, hidden: true });
  const bar = h("div", { class: "bar", hidden: true }, h("div", { style: "width:0%" }));
  const status = h("p", { class: "muted", id: "upload-status" });
  const errors = h("div");
  const drop = h("label", { class: "drop", for: "archive-file" },
    "Drop a .zip, .tar or .tar.gz here, or click to pick one: train/<class>/ and test/<class>/ folders, or <class>/ folders alone");

  const go = async (blob, filename) => {
    clear(errors);
    bar.hidden = false;
    status.textContent = `uploading ${filename} (${(blob.size / 1e6).toFixed(1)} MB)…`;
    try {
      const dataset = await uploadArchive(blob, filename, { name: name.value.trim(), test_fraction: fraction.value },
        (done) => { bar.firstChild.style.width = `${(100 * done).toFixed(1)}%`; });
      location.hash = `#/datasets/${dataset.id}`;
    } catch (error) {
      bar.hidden = true;
      status.textContent = "";
      clear(errors, errorBox(error));
    }
  };
  archive.addEventListener("change", () => archive.files[0] && go(archive.files[0], archive.files[0].name));
  folder.addEventListener("change", () => {
    const files = [...folder.files];
    if (!files.length) return;
    const root = (files[0].webkitRelativePath || "dataset").split("/")[0];
    try {
      go(tarOf(files), `${root}.tar`);
    } catch (error) {
      clear(errors, errorBox(error));
    }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) go(file, file.name);
  });
  return h("section", { class: "card" }, h("h2", {}, "Upload a dataset"),
    h("div", { class: "toolbar" },
      h("label", {}, "Name ", name),
      h("label", { title: "flat <class>/ layouts: the share of each class held out as the test set" }, "Test fraction ", fraction),
      h("span", { class: "spacer" }),
      h("button", { type: "button", onclick: () => folder.click() }, "Choose a folder…")),
    archive, folder, drop, bar, status, errors);
}

async function list(root, { page }) {
  const body = h("tbody");
  clear(root, h("h1", {}, "Datasets"), uploadCard(),
    h("section", { class: "card" }, h("h2", {}, "Uploaded"), h("div", { class: "table-wrap" }, h("table", { class: "datasets" },
      h("thead", {}, h("tr", {}, ["name", "status", "classes", "train", "test", "created"].map((c) => h("th", {}, c)))), body))));
  page.poll(async () => {
    const { uploaded } = await api("/datasets");
    if (!page.alive) return false;
    clear(body, uploaded.length ? uploaded.map((d) => h("tr", { dataset: { id: d.id } },
      h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)),
      h("td", {}, statusBadge(d.status)),
      h("td", { class: "num" }, String((d.classes || []).length)),
      h("td", { class: "num" }, String(total(d.counts, "train"))),
      h("td", { class: "num" }, String(total(d.counts, "test"))),
      h("td", { title: d.created_at }, ago(d.created_at)))) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "None yet.")));
    return uploaded.some((d) => d.status === "importing");
  }, 1500);
}

/** The image side a new job should use: 32 px for small images (a median shorter side under 48 px),
 * else 64 (what a CPU trains in minutes; the form can raise it to 256). */
export function suggestedSize(dataset) {
  const side = Math.min(...(dataset.image_size || [32]));
  return side < 48 ? 32 : 64;
}

function counts(dataset) {
  const train = dataset.counts.train, test = dataset.counts.test || {};
  const values = Object.values(train);
  const most = Math.max(...values), least = Math.min(...values);
  const warning = least > 0 && most / least >= IMBALANCE
    ? h("p", { class: "warning", id: "imbalance" }, `Imbalanced: the largest class has ${most} training images, the smallest ${least} `
      + `(${(most / least).toFixed(1)}×). Accuracy will favour the large classes; per-class accuracy and the confusion matrix show it.`)
    : null;
  return h("div", {}, warning, h("div", { class: "bars", id: "class-counts" }, Object.entries(train).map(([name, n]) =>
    h("div", { class: "bar-row" },
      h("span", { class: "bar-label", title: name }, name),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${(100 * n) / most}%` })),
      h("span", { class: "bar-value" }, `${n} + ${test[name] ?? 0}`)))),
    h("p", { class: "muted" }, "training + test images per class"));
}

async function detail(root, { page, args }) {
  const [id] = args;
  const box = h("div");
  clear(root, h("h1", {}, "Dataset"), box);
  page.poll(async () => {
    const dataset = await api(`/datasets/${id}`);
    if (!page.alive) return false;
    const head = h("p", {}, statusBadge(dataset.status), ` ${dataset.name} · `, h("span", { class: "mono" }, dataset.id));
    if (dataset.status === "importing") {
      const { done = 0, total: all = 0 } = dataset.progress || {};
      clear(box, h("section", { class: "card" }, head, h("div", { class: "bar" }, h("div", { style: `width:${all ? (100 * done) / all : 0}%` })),
        h("p", { class: "muted" }, all ? `importing: ${done} of ${all} images` : "importing…")));
      return true;
    }
    if (dataset.status === "failed") {
      clear(box, h("section", { class: "card" }, head, errorBox(dataset.error)));
      return false;
    }
    const size = suggestedSize(dataset);
    const samples = await blobUrl(`/datasets/${id}/samples.png`);
    const { uploaded = [] } = await api("/datasets");
    const twins = uploaded.filter((d) => d.id !== id && d.sha256 && d.sha256 === dataset.sha256); // the same content hash
    const remove = h("button", { type: "button", class: "danger", onclick: async () => {
      try {
        await apiNoContent(`/datasets/${id}`, { method: "DELETE" });
        location.hash = "#/datasets";
      } catch (error) {
        box.append(errorBox(error));
      }
    } }, "Delete");
    clear(box,
      h("section", { class: "card" }, head,
        h("p", {}, `${dataset.classes.length} classes · ${total(dataset.counts, "train")} training and ${total(dataset.counts, "test")} test images`
          + ` · median size ${dataset.image_size.join("×")} px · ${dataset.channels === 1 ? "greyscale" : "colour"}`),
        twins.length ? h("p", { class: "muted", id: "twins" }, "The same images, classes and split as ",
          twins.map((d, i) => [i ? ", " : "", h("a", { href: `#/datasets/${d.id}` }, d.name), ` (uploaded ${ago(d.created_at)})`]),
          ": one of them is enough.") : null,
        h("div", { class: "toolbar" },
          h("a", { class: "button primary", id: "train-on-this", href: `#/new?dataset=${id}&image_size=${size}&train=${total(dataset.counts, "train")}` }, `Train on this (${size} px)`),
          h("span", { class: "spacer" }), remove)),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Classes"), counts(dataset)),
        h("section", { class: "card" }, h("h2", {}, "Samples"), h("img", { src: samples, alt: "samples of each class", class: "artifact", id: "samples" }))),
      h("section", { class: "card" }, h("h2", {}, `Skipped files (${dataset.skipped_count})`),
        dataset.skipped.length ? h("ul", { id: "skipped" }, dataset.skipped.map((s) => h("li", {}, h("span", { class: "mono" }, s.member), ` — ${s.reason}`)))
          : h("p", { class: "muted" }, "None: every file was an image.")));
    return false;
  }, 1000);
}

export async function render(root, context) {
  return context.args.length && context.args[0] ? detail(root, context) : list(root, context);
}
