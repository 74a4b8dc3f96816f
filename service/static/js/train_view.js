// A training job: live curves (curves.js), then per-class accuracy, the confusion matrix, the misclassified
// and GradCAM galleries, calibration, likely label errors, and the checkpoint with its exports.

import { api, blobUrl } from "./api.js";
import { runCurves } from "./curves.js";
import { clear, ENDED, errorBox, h, openLightbox, pct } from "./dom.js";
import { checkpointExports } from "./job_files.js";
import { confusionTable, examplesExplorer, MAX_TABLE_CLASSES } from "./examples.js";
import { probesSection } from "./probes.js";
import { calibrationView, labelIssuesGallery } from "./trust.js";

// The galleries, in the order a person looks at them; titles on every tile are "pred: X / true: Y".
export const GALLERIES = [
  ["gradcam_misclassified.png", "GradCAM · predicted class", "what the model looked at when it was wrong"],
  ["gradcam_misclassified_true.png", "GradCAM · true class", "where the evidence for the right class was"],
  ["misclassified.png", "Misclassified", "test images the best checkpoint got wrong"],
  ["gradcam_correct.png", "GradCAM · correct", "correctly classified images, for contrast"],
  ["samples.png", "Training samples", "a training batch as the model saw it (augmented)"],
];

function gallery(job, names) {
  const present = GALLERIES.filter(([name]) => names.has(name));
  if (!present.length) return h("p", { class: "muted" }, "No images: the run left no galleries.");
  const image = h("img", { class: "gallery-image", alt: "", title: "click for a larger view" });
  const caption = h("p", { class: "muted" });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const show = async (name, label, about) => {
    tabs.querySelectorAll("button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.name === name)));
    caption.textContent = `${about}. Each tile is titled "pred / true"; click the image for a larger view.`;
    image.alt = label;
    image.dataset.name = name;
    image.src = await blobUrl(`/jobs/${job.id}/artifacts/${name}`);
  };
  present.forEach(([name, label, about]) =>
    tabs.append(h("button", { type: "button", role: "tab", dataset: { name }, onclick: () => show(name, label, about) }, label)));
  image.addEventListener("click", () => openLightbox(image.src, image.alt));
  show(...present[0]);
  return h("div", { class: "gallery" }, tabs, caption, image);
}

function perClass(accuracy, status) {
  const entries = Object.entries(accuracy || {});
  if (!entries.length && ENDED.includes(status)) { // the report is of the best epoch's model: no epoch, none
    return h("p", { class: "muted" }, `No per-class accuracy: the job ${status === "cancelled" ? "was cancelled" : status} `
      + "before an epoch finished.");
  }
  if (!entries.length) return h("p", { class: "muted" }, "Per-class accuracy appears when the job ends.");
  const worst = Math.min(...entries.map(([, v]) => v ?? 1));
  return h("div", { class: "bars", id: "per-class" }, entries.map(([name, value]) =>
    h("div", { class: `bar-row${value === worst ? " worst" : ""}` },
      h("span", { class: "bar-label" }, name),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${100 * (value ?? 0)}%` })),
      h("span", { class: "bar-value" }, pct(value, 1)))));
}

async function artifactImage(job, name, alt) {
  const src = await blobUrl(`/jobs/${job.id}/artifacts/${name}`);
  return h("img", { src, alt, class: "artifact", onclick: () => openLightbox(src, alt) });
}

async function checkpointCard(job) {
  if (!job.checkpoint_id) return h("p", { class: "muted" }, "No checkpoint (no epoch finished).");
  const c = await api(`/checkpoints/${job.checkpoint_id}`);
  return h("div", { class: "checkpoint" },
    h("p", {}, h("span", { class: "mono" }, c.id), ` · ${c.model.name} w${c.model.width} · ${c.dataset} · epoch ${c.epoch}`,
      ` · test accuracy ${pct(c.test_acc)}${c.selected_on === "test" ? " (epoch chosen on the test set)" : ""}`,
      c.last_epoch != null && c.last_epoch !== c.epoch ? ` · last epoch ${c.last_epoch}: ${pct(c.last_test_acc)}` : "",
      c.test_time_flip ? " · with test-time flip" : ""),
    h("a", { class: "button primary", href: `#/predict?checkpoint=${c.id}` }, "Predict with this"), checkpointExports(c));
}

// What each accuracy is: the last epoch's, and the best one's with the set that chose it (a best chosen
// on the test set is an optimistic estimate: the set that picked it also measures it).
export function accuracyText(metrics) {
  const { best, last } = metrics;
  if (!best) return "No epoch finished";
  const flip = metrics.test_time_flip ? " (with test-time flip)" : "";
  const lastText = last ? `Last epoch (${last.epoch}) test accuracy ${pct(last.test_acc)}${flip}` : "";
  const chosen = metrics.selected_on === "validation"
    ? `best on validation ${pct(best.val_acc)} at epoch ${best.epoch}, its test accuracy ${pct(best.test_acc)}`
    : `best ${pct(best.test_acc)} at epoch ${best.epoch}, chosen on the test set (optimistic)`;
  return last && last.epoch === best.epoch && metrics.selected_on === "test"
    ? `${lastText}, also the best epoch (chosen on the test set)` : [lastText, chosen].filter(Boolean).join(" · ");
}

// The matrix as a table whose cells show their images in the explorer; the PNG for a run without
// examples.json, or with too many classes for a table.
async function confusionView(job, names, cells, explorer) {
  if (cells && cells.classes.length <= MAX_TABLE_CLASSES) {
    const table = confusionTable(cells, (t, p) => explorer.pick(t, p));
    explorer.listen((state) => table.mark(state.true_class, state.pred_class));
    return [table.element,
      h("p", { class: "muted" }, "Rows: true class; columns: predicted. Click a cell to see its test images below.")];
  }
  return names.has("confusion_matrix.png") ? artifactImage(job, "confusion_matrix.png", "confusion matrix")
    : h("p", { class: "muted" }, "not rendered");
}

async function results(box, job, metrics) {
  const names = new Set((await api(`/jobs/${job.id}/artifacts`)).artifacts.map((a) => a.name));
  const cells = names.has("examples.json") ? await api(`/jobs/${job.id}/confusion`) : null;
  const explorer = cells ? examplesExplorer(job, cells.classes) : null;
  clear(box,
    h("section", { class: "card" }, h("h2", {}, "Result"), h("p", { id: "result-accuracy" }, accuracyText(metrics),
      metrics.stop_reason ? ` · stopped: ${metrics.stop_reason}` : "")),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Per-class accuracy"), perClass(metrics.per_class_accuracy, metrics.status)),
      h("section", { class: "card" }, h("h2", {}, "Confusion matrix"), await confusionView(job, names, cells, explorer))),
    h("section", { class: "card", id: "galleries" }, h("h2", {}, "Mistakes and GradCAM"),
      explorer ? [explorer.element, h("h3", {}, "Grids")] : null, gallery(job, names)),
    h("section", { class: "card", id: "calibration" }, h("h2", {}, "Calibration"), calibrationView(metrics.calibration)),
    names.has("label_issues.json") ? h("section", { class: "card", id: "label-issues-card" },
      h("h2", {}, "Likely label errors"), labelIssuesGallery(job)) : null,
    h("section", { class: "card", id: "checkpoint" }, h("h2", {}, "Checkpoint"), await checkpointCard(job)));
}

export function mount(box, job, page) {
  const resultsBox = h("div");
  const probes = probesSection(job);
  const records = [];
  const curves = runCurves(job, page, records);
  clear(box, curves.element, probes.element, resultsBox);
  curves.start();
  return {
    async refresh(current) {
      const since = records.length ? records[records.length - 1].epoch : 0;
      const before = records.length;
      const metrics = await api(`/jobs/${current.id}/metrics?since_epoch=${since}`);
      records.push(...metrics.epochs.filter((r) => r.epoch > since));
      if (records.length !== before) await probes.update(records[records.length - 1].epoch);
      box.dataset.epochs = String(records.length);
      const ended = ENDED.includes(metrics.status) && ENDED.includes(current.status);
      await curves.refresh(current, records.length !== before || ended); // new epochs: new steps
      if (!ended) return false;
      try {
        await results(resultsBox, current, metrics);
      } catch (error) {
        resultsBox.append(errorBox(error));
      }
      return true;
    },
  };
}
