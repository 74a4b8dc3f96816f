// What a job leaves besides its curves: its warnings, the worker's log (a panel that follows it while the
// job runs) and its files, each a download; a checkpoint's model as ONNX or TorchScript, and its model card.
// Downloads are fetched with the API key and saved from memory: a plain link would go without the key.

import { api, apiText, fetchFile } from "./api.js";
import { clear, ENDED, errorBox, h, saveBlob } from "./dom.js";

const LOG_TAIL = 1000; // lines of the log on the page (the API keeps 1 MiB a job; Download has it all)

/** A button that fetches `path` and saves it under its Content-Disposition name (else `fallback`). */
export function downloadButton(label, path, fallback, attrs = {}) {
  const button = h("button", { type: "button", class: "small", ...attrs }, label);
  const problem = h("span", { class: "field-error", role: "alert" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    problem.textContent = "";
    try {
      const { blob, name } = await fetchFile(path, fallback);
      saveBlob(blob, name);
    } catch (error) {
      problem.textContent = `${label}: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return h("span", { class: "download" }, button, problem);
}

/** The job's warnings (the metrics carry them once it has ended); hidden while there are none. */
export function warningsBox() {
  const element = h("section", { class: "card warning", id: "job-warnings", hidden: true });
  return {
    element,
    show(warnings) {
      element.hidden = !warnings?.length;
      clear(element, h("h2", {}, warnings?.length === 1 ? "A warning" : `${warnings?.length} warnings`),
        h("ul", {}, (warnings || []).map((text) => h("li", {}, text))));
    },
  };
}

/** The worker's log in a collapsible panel: read when opened, then at every refresh while the job runs,
 * kept scrolled to its end unless the reader scrolled up. */
export function logPanel(job) {
  const text = h("pre", { class: "code log", id: "job-log-text", tabindex: "0" });
  const meta = h("span", { class: "muted", id: "job-log-meta" });
  const details = h("details", { id: "job-log" }, h("summary", {}, "Worker log"),
    h("div", { class: "section-head" }, meta, h("span", { class: "spacer" }),
      downloadButton("Download the whole log", `/jobs/${job.id}/log`, `${job.id}.log`)), text);
  let endedRead = false;
  const read = async () => {
    const following = text.scrollTop + text.clientHeight >= text.scrollHeight - 8;
    const log = await apiText(`/jobs/${job.id}/log?tail=${LOG_TAIL}`);
    const lines = log ? log.replace(/\n$/, "").split("\n").length : 0;
    text.textContent = log || "Nothing yet: the worker has not said anything about this job.";
    meta.textContent = lines >= LOG_TAIL ? `the last ${LOG_TAIL} lines` : `${lines} line${lines === 1 ? "" : "s"}`;
    text.dataset.lines = String(lines);
    if (following) text.scrollTop = text.scrollHeight;
  };
  details.addEventListener("toggle", () => details.open && read().catch((error) => text.replaceChildren(errorBox(error))));
  return {
    element: h("section", { class: "card" }, details),
    async refresh(current) {
      if (!details.open || endedRead) return;
      endedRead = ENDED.includes(current.status);
      await read();
    },
  };
}

function filesTable(artifacts) {
  if (!artifacts.length) return h("p", { class: "muted" }, "No files yet.");
  return h("div", { class: "table-wrap" }, h("table", { class: "files" },
    h("thead", {}, h("tr", {}, h("th", {}, "file"), h("th", {}, "type"), h("th", {}))),
    h("tbody", {}, artifacts.map((a) => h("tr", { dataset: { name: a.name } },
      h("td", { class: "mono" }, a.name), h("td", { class: "muted" }, a.media_type),
      h("td", { class: "num" }, downloadButton("Download", a.url, a.name, { dataset: { download: a.name } })))))));
}

/** The job's files, listed again when its status or epoch changes (each epoch registers some). */
export function filesSection(job) {
  const list = h("div", { id: "job-files" }, h("p", { class: "muted" }, "Loading…"));
  let seen = null;
  return {
    element: h("section", { class: "card", id: "artifacts" }, h("h2", {}, "Files"),
      h("p", { class: "muted" }, "Everything the run wrote: plots, galleries, the data behind them."), list),
    async refresh(current) {
      const key = `${current.status} ${current.progress?.epoch ?? 0}`;
      if (key === seen) return;
      seen = key;
      clear(list, filesTable((await api(`/jobs/${job.id}/artifacts`)).artifacts));
    },
  };
}

/** The checkpoint taken away: the model as ONNX or TorchScript (the first export takes a few seconds) and its
 * model card, to read here or to save. */
export function checkpointExports(checkpoint) {
  const card = h("pre", { class: "code card-text", id: "model-card-text" });
  const details = h("details", { id: "model-card" }, h("summary", {}, "Model card"), card);
  details.addEventListener("toggle", async () => {
    if (!details.open || card.textContent) return;
    try {
      card.textContent = await apiText(`/checkpoints/${checkpoint.id}/card`);
    } catch (error) {
      card.replaceChildren(errorBox(error));
    }
  });
  const path = `/checkpoints/${checkpoint.id}`;
  return h("div", { class: "exports" },
    h("div", { class: "row", id: "checkpoint-exports" }, h("span", { class: "muted" }, "Download:"),
      downloadButton("ONNX", `${path}/export?format=onnx`, `${checkpoint.id}.onnx`, { dataset: { format: "onnx" } }),
      downloadButton("TorchScript", `${path}/export?format=torchscript`, `${checkpoint.id}.pt`, { dataset: { format: "torchscript" } }),
      downloadButton("Model card (Markdown)", `${path}/card`, `${checkpoint.id}.md`, { dataset: { format: "card" } })),
    details);
}
