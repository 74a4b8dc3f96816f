// A training job: live accuracy / loss / LR curves, then per-class accuracy, the confusion matrix,
// the misclassified and GradCAM galleries, and the checkpoint.

import { api, artifactJson, blobUrl } from "./api.js";
import { epochSeries, lineChart } from "./charts.js";
import { clear, ENDED, errorBox, h, openLightbox, pct } from "./dom.js";

// The galleries, in the order a person looks at them; titles on every tile are "pred: X / true: Y".
export const GALLERIES = [
  ["gradcam_misclassified.png", "GradCAM · predicted class", "what the model looked at when it was wrong"],
  ["gradcam_misclassified_true.png", "GradCAM · true class", "where the evidence for the right class was"],
  ["misclassified.png", "Misclassified", "test images the best checkpoint got wrong"],
  ["gradcam_correct.png", "GradCAM · correct", "correctly classified images, for contrast"],
  ["samples.png", "Training samples", "a training batch as the model saw it (augmented)"],
];

function chartBox(id) {
  return h("div", { class: "chart", id });
}

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

function perClass(accuracy) {
  const entries = Object.entries(accuracy || {});
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
    h("a", { class: "button primary", href: `#/predict?checkpoint=${c.id}` }, "Predict with this"));
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

async function results(box, job, metrics) {
  const names = new Set((await api(`/jobs/${job.id}/artifacts`)).artifacts.map((a) => a.name));
  clear(box,
    h("section", { class: "card" }, h("h2", {}, "Result"), h("p", { id: "result-accuracy" }, accuracyText(metrics),
      metrics.stop_reason ? ` · stopped: ${metrics.stop_reason}` : "")),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Per-class accuracy"), perClass(metrics.per_class_accuracy)),
      h("section", { class: "card" }, h("h2", {}, "Confusion matrix"),
        names.has("confusion_matrix.png") ? await artifactImage(job, "confusion_matrix.png", "confusion matrix")
          : h("p", { class: "muted" }, "not rendered"))),
    h("section", { class: "card", id: "galleries" }, h("h2", {}, "Mistakes and GradCAM"), gallery(job, names)),
    h("section", { class: "card", id: "checkpoint" }, h("h2", {}, "Checkpoint"), await checkpointCard(job)));
}

const LOG_LOSS_RATIO = 20; // a loss that spans more than this factor is drawn on a log axis (spikes flatten the rest)

function lossChart(box, log) {
  const title = log ? "Loss (log scale)" : "Loss";
  return lineChart(box, [{ label: "train" }, { label: "test" }], [[], [], []], { title, xLabel: "epoch", integerX: true, logY: log });
}

function needsLog(records) {
  const losses = records.flatMap((r) => [r.train_loss, r.test_loss]).filter((v) => v > 0);
  return losses.length > 0 && Math.max(...losses) / Math.min(...losses) > LOG_LOSS_RATIO;
}

export function mount(box, job, page) {
  const acc = chartBox("chart-accuracy"), loss = chartBox("chart-loss"), lr = chartBox("chart-lr");
  const resultsBox = h("div");
  clear(box, h("section", { class: "card" }, h("h2", {}, "Curves"),
    h("div", { class: "charts" }, acc, loss, lr)), resultsBox);
  const records = [];
  const charts = {
    acc: lineChart(acc, [{ label: "train" }, { label: "test" }], [[], [], []],
      { title: "Accuracy", xLabel: "epoch", percentY: true, integerX: true }),
    loss: lossChart(loss, false),
    lr: lineChart(lr, [{ label: "lr" }], [[], []], { title: "Learning rate per epoch", xLabel: "epoch", integerX: true }),
  };
  page.onLeave(() => [charts.acc, charts.loss, charts.lr].forEach((c) => c.destroy()));

  // The LR per step from lr_steps.json (the worker registers it with every epoch); per epoch before that.
  const showLr = async () => {
    let steps = null;
    try {
      steps = await artifactJson(`/jobs/${job.id}/artifacts/lr_steps.json`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    if (!page.alive) return;
    if (!steps?.length) return charts.lr.update(epochSeries(records, ["lr"]));
    if (!charts.lrPerStep) {
      charts.lr.destroy();
      charts.lr = lineChart(lr, [{ label: "lr" }], [[], []],
        { title: "Learning rate per step", xLabel: "step", integerX: true, points: false });
      charts.lrPerStep = true;
    }
    charts.lr.update([steps.map((_, i) => i + 1), steps]);
  };

  return {
    async refresh(current) {
      const since = records.length ? records[records.length - 1].epoch : 0;
      const before = records.length;
      const metrics = await api(`/jobs/${current.id}/metrics?since_epoch=${since}`);
      records.push(...metrics.epochs.filter((r) => r.epoch > since));
      charts.acc.update(epochSeries(records, ["train_acc", "test_acc"]));
      if (!charts.logLoss && needsLog(records)) {
        charts.loss.destroy();
        charts.loss = lossChart(loss, (charts.logLoss = true));
      }
      charts.loss.update(epochSeries(records, ["train_loss", "test_loss"]));
      box.dataset.epochs = String(records.length);
      const ended = ENDED.includes(metrics.status) && ENDED.includes(current.status);
      if (records.length !== before || ended) await showLr(); // new epochs: new steps
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
