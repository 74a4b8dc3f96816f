// One job: header, progress with ETA and cancel, its warnings, then the kind's own view (training or LR
// finder), its files, the worker's log, and the spec that ran, copyable as JSON or as a CLI command.

import { api, uploadedNames } from "./api.js";
import { ago, clear, copyButton, datasetText, duration, ENDED, errorBox, h, lrText, modelText, seconds, statusBadge } from "./dom.js";
import { filesSection, logPanel, warningsBox } from "./job_files.js";
import * as auditView from "./audit_view.js";
import * as lrView from "./lr_view.js";
import { runHead } from "./run_labels.js";
import * as trainView from "./train_view.js";

const POLL_MS = 1500; // live curves: one metrics read per 1.5 s while the job runs

export function eta(job) {
  const { fraction, updated_at: updated } = job.progress || {};
  if (!job.started_at || !fraction || fraction >= 1 || !updated) return null;
  const elapsed = (Date.parse(updated) - Date.parse(job.started_at)) / 1000;
  return (elapsed * (1 - fraction)) / fraction;
}

// What a running job is doing besides its steps: the first seconds of a job are no longer blank.
const PHASES = {
  "loading data": "loading the data",
  compiling: "compiling the model (kept for later jobs)",
  evaluating: "evaluating",
  "writing the report": "writing the report (confusion matrix, GradCAM)",
};

function megabytes(bytes) {
  return bytes ? `${(bytes / 1e6).toFixed(0)} MB` : "?";
}

export function progressText(job) {
  const p = job.progress || {};
  if (job.status === "queued") return "waiting for a worker";
  const parts = [];
  if (job.status === "running" && p.phase === "downloading") {
    parts.push(`downloading ${p.downloading}: ${megabytes(p.downloaded_bytes)} of ${megabytes(p.total_bytes)}`);
  } else if (job.status === "running" && PHASES[p.phase]) parts.push(PHASES[p.phase]);
  if (p.epochs) parts.push(`epoch ${p.epoch ?? 0} / ${p.epochs}`);
  if (p.stop_reason) parts.push(`stopped at iteration ${p.step} of ${p.steps} (${p.stop_reason})`); // an LR finder's early stop
  else if (p.steps) parts.push(`step ${p.step ?? 0} / ${p.steps}`);
  if (job.status === "running" && p.loss !== undefined) parts.push(`train loss ${p.loss.toFixed(3)}`);
  if (p.fraction !== undefined && !p.stop_reason) parts.push(`${(100 * p.fraction).toFixed(1)}%`);
  if (job.status === "running" && eta(job) !== null) parts.push(`ETA ${seconds(eta(job))}`);
  if (ENDED.includes(job.status)) parts.push(`took ${seconds(duration(job))}`);
  return parts.join(" · ");
}

function renderProgress(box, job, onCancel) {
  const fraction = job.status === "succeeded" ? 1 : job.progress?.fraction ?? 0;
  const active = !ENDED.includes(job.status);
  clear(box,
    h("div", { class: "progress-line" },
      statusBadge(job.status),
      h("span", { class: "progress-text" }, progressText(job)),
      job.cancel_requested && active ? h("span", { class: "muted" }, " stopping…") : null,
      h("span", { class: "spacer" }),
      active && !job.cancel_requested ? h("button", { type: "button", class: "danger", onclick: onCancel }, "Cancel") : null),
    h("div", { class: `bar ${job.status}`, role: "progressbar", "aria-valuenow": Math.round(100 * fraction),
      "aria-valuemin": 0, "aria-valuemax": 100 }, h("div", { style: `width:${(100 * fraction).toFixed(1)}%` })),
    job.error ? errorBox(job.error) : null);
}

function lrNote(job) {
  const optimizer = job.params.optimizer || {};
  if (job.kind !== "train") return null;
  if (optimizer.lr !== "auto") return ` · lr ${lrText(optimizer.lr)}`;
  return h("span", {}, " · lr auto from ", h("a", { href: `#/jobs/${optimizer.lr_finder_job}` }, "its LR finder"),
    job.lr ? ` (${lrText(job.lr)})` : "");
}

const TITLES = { train: "Training", lr_finder: "LR finder", audit: "Label audit" };
const COMMANDS = { train: "train", lr_finder: "lr-find", audit: "audit" };
const VIEWS = { train: trainView, lr_finder: lrView, audit: auditView };
const AUDIT_DROPS = ["validation_split", "target_accuracy", "probe_indices"]; // an audit holds out its folds instead

/** A training job's spec as a label audit's: each fold trains `epochs`, the run's own settings otherwise. */
export function auditSpec(params, folds, epochs) {
  const spec = Object.fromEntries(Object.entries(params).filter(([key]) => !AUDIT_DROPS.includes(key)));
  return { ...spec, folds, epochs };
}

/** "Audit the training labels": K-fold training of this job's spec that ranks the training set's label errors. */
function auditSection(job) {
  const folds = h("input", { id: "audit-folds-input", type: "number", min: 2, max: 10, value: "4" });
  const epochs = h("input", { id: "audit-epochs", type: "number", min: 1, max: job.params.epochs,
    value: String(Math.max(1, Math.ceil(job.params.epochs / 2))) });
  const status = h("span", { class: "muted", id: "audit-status" });
  const start = async () => {
    try {
      const audit = await api("/jobs/audit", { method: "POST",
        json: { ...auditSpec(job.params, Number(folds.value), Number(epochs.value)),
          name: `audit of ${job.name || job.id.slice(0, 8)}` } });
      location.hash = `#/jobs/${audit.id}`;
    } catch (error) {
      clear(status, errorBox(error));
    }
  };
  return h("section", { class: "card", id: "audit" },
    h("h2", {}, "Audit the training labels"),
    h("p", { class: "muted" }, "Trains this spec once per fold on the other folds, so that every training image is "
      + "scored by a model that never saw it; then ranks the images whose label those models contradict "
      + "(cleanlab). Each fold costs about epochs-per-fold / epochs of this run."),
    h("div", { class: "row wrap" }, h("label", {}, "Folds ", folds), h("label", {}, "Epochs per fold ", epochs),
      h("button", { type: "button", id: "audit-start", onclick: start }, "Start audit"), status));
}

export function cliText(job) {
  const command = COMMANDS[job.kind];
  const spec = JSON.stringify(job.params, null, 2);
  return [
    "cat > spec.json <<'EOF'", spec, "EOF",
    `lrcam ${command} spec.json --watch            # over HTTP (LRCAM_URL, LRCAM_API_KEY)`,
    `python -m ml ${command} spec.json --out runs/${job.id.slice(0, 8)}   # the engine alone, no server`,
  ].join("\n");
}

function specSection(job) {
  const json = JSON.stringify(job.params, null, 2);
  return h("section", { class: "card" },
    h("div", { class: "section-head" }, h("h2", {}, "Spec that ran"), h("span", { class: "spacer" }),
      copyButton("Copy JSON", () => json), copyButton("Copy CLI command", () => cliText(job)),
      // the form edits training and LR-finder specs; an audit is started again from its training job
      job.kind === "audit" ? null : h("a", { class: "button small", href: `#/new?from=${job.id}` }, "Edit and run again")),
    h("details", { open: true }, h("summary", {}, "JSON (the POST body)"), h("pre", { class: "code", id: "spec-json" }, json)),
    h("details", {}, h("summary", {}, "CLI command"), h("pre", { class: "code" }, cliText(job))));
}

/** The warnings the metrics carry once a job has ended (none where it ended before it had metrics). */
async function endWarnings(job) {
  const since = job.kind === "train" ? `?since_epoch=${job.params.epochs}` : ""; // the epochs are drawn already
  return (await api(`/jobs/${job.id}/metrics${since}`).catch(() => ({ warnings: [] }))).warnings;
}

export async function render(root, { page, args }) {
  const id = args[0];
  let job = await api(`/jobs/${id}`);
  const names = job.params.dataset?.name === "uploaded" ? await uploadedNames().catch(() => null) : null;
  const title = TITLES[job.kind];
  const progressBox = h("section", { class: "card progress", id: "progress" });
  const viewBox = h("div", { class: "view" });
  const lrBox = h("span", {}, lrNote(job));
  const head = runHead(job, title); // name, tags, note (editable) and Delete
  const warnings = warningsBox(), files = filesSection(job), log = logPanel(job);
  clear(root,
    h("div", { class: "page-head" },
      head.element,
      h("p", { class: "muted" }, `${datasetText(job.params, names)} · ${modelText(job.params)} · created ${ago(job.created_at)}`,
        job.attempts > 1 ? ` · attempt ${job.attempts}` : "", lrBox)),
    progressBox, warnings.element, viewBox, files.element, log.element,
    job.kind === "train" ? auditSection(job) : null, specSection(job));

  const cancel = async () => {
    try {
      job = await api(`/jobs/${id}/cancel`, { method: "POST" });
      renderProgress(progressBox, job, cancel);
    } catch (error) {
      progressBox.append(errorBox(error));
    }
  };
  const view = VIEWS[job.kind].mount(viewBox, job, page);
  page.poll(async () => {
    job = await api(`/jobs/${id}`);
    if (!page.alive) return false;
    renderProgress(progressBox, job, cancel);
    head.update(job);
    clear(lrBox, lrNote(job)); // "auto" is resolved when the job ends
    const ended = await view.refresh(job);
    await Promise.all([files.refresh(job), log.refresh(job)]);
    if (ended) warnings.show(await endWarnings(job));
    return !ended;
  }, POLL_MS);
}
