// Predict: a checkpoint (or "latest"), one or more images dropped or picked, top-k bars and the
// GradCAM overlay beside the original; method and target class switch and re-run.

import { api } from "./api.js";
import { clear, errorBox, h, pct } from "./dom.js";

const METHODS = [["gradcam", "GradCAM"], ["gradcam++", "GradCAM++"]]; // the API's `method` values

function checkpointLabel(c) {
  const classes = c.classes || [];
  const dataset = c.dataset === "uploaded" // its classes say which upload it learnt
    ? `uploaded: ${classes.slice(0, 3).join(", ")}${classes.length > 3 ? ` +${classes.length - 3}` : ""}` : c.dataset;
  return `${c.id.slice(0, 8)} · ${c.model.name} w${c.model.width} · ${dataset} · ${pct(c.test_acc)} (job ${c.job_id.slice(0, 8)})`;
}

/** The checkpoint's job's faithfulness scores (its metrics), each method's beside its name; the higher marked. */
async function faithfulnessText(c) {
  const f = (await api(`/jobs/${c.job_id}/metrics`)).faithfulness;
  if (!f) return "No faithfulness scores: this checkpoint's job ended before they were recorded.";
  const best = Math.max(...METHODS.map(([value]) => f[value]));
  return [`Faithfulness on ${f.probes} probe images (${f.measure}, higher is more faithful): `,
    METHODS.map(([value, text], i) => [i ? " · " : "", f[value] === best ? h("strong", {}, `${text} ${f[value].toFixed(3)}`)
      : `${text} ${f[value].toFixed(3)}`])];
}

function resultCard(file, prediction) {
  const original = URL.createObjectURL(file);
  return h("div", { class: "card prediction" },
    h("h3", {}, prediction.filename, " → ", h("strong", {}, prediction.label), ` (${pct(prediction.confidence, 1)})`),
    h("div", { class: "pair" },
      h("figure", {}, h("img", { src: original, alt: `${prediction.filename} as uploaded`, class: "pixelated" }),
        h("figcaption", {}, "original")),
      prediction.gradcam ? h("figure", {}, h("img", { src: `data:image/png;base64,${prediction.gradcam.overlay_png_base64}`,
        alt: "GradCAM overlay", class: "pixelated overlay" }),
        h("figcaption", {}, `${prediction.gradcam.method} for "${prediction.gradcam.target}"`)) : null),
    h("div", { class: "bars" }, prediction.topk.map((t) => h("div", { class: "bar-row" },
      h("span", { class: "bar-label" }, t.label),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${100 * t.probability}%` })),
      h("span", { class: "bar-value" }, pct(t.probability, 1))))));
}

export async function render(root, { query }) {
  const { checkpoints } = await api("/checkpoints");
  if (!checkpoints.length) {
    clear(root, h("h1", {}, "Predict"), h("p", {}, "No checkpoint yet: ", h("a", { href: "#/new" }, "train a model"), " first."));
    return;
  }
  let files = [];
  const checkpoint = h("select", { id: "checkpoint" }, h("option", { value: "latest" }, `latest (${checkpointLabel(checkpoints[0])})`),
    checkpoints.map((c) => h("option", { value: c.id, selected: c.id === query.checkpoint }, checkpointLabel(c))));
  const classesOf = () => (checkpoints.find((c) => c.id === checkpoint.value) || checkpoints[0]).classes;
  const target = h("select", { id: "target" });
  const fillTargets = () => clear(target, h("option", { value: "pred" }, "predicted class"),
    classesOf().map((name) => h("option", { value: name }, name)));
  fillTargets();
  const method = h("select", { id: "method" }, METHODS.map(([value, text]) => h("option", { value }, text)));
  const faithfulness = h("span", { id: "faithfulness", class: "faithfulness muted" });
  const showFaithfulness = async () => {
    const c = checkpoints.find((x) => x.id === checkpoint.value) || checkpoints[0];
    try {
      const text = await faithfulnessText(c);
      if ((checkpoints.find((x) => x.id === checkpoint.value) || checkpoints[0]) === c) clear(faithfulness, text);
    } catch (error) {
      clear(faithfulness, `No faithfulness scores: ${error.message}`);
    }
  };
  const topk = h("input", { id: "topk", type: "number", min: 1, max: 20, value: "3" });
  const gradcam = h("input", { id: "gradcam", type: "checkbox", checked: true });
  // offered only for a checkpoint whose run fitted a temperature on its validation split
  const calibrated = h("input", { id: "calibrated", type: "checkbox" });
  const calibratedLabel = h("label", { id: "calibrated-label", title: "divide the logits by the temperature fitted on "
    + "the validation split before the softmax" }, calibrated, " calibrated");
  const showCalibrated = () => {
    const c = checkpoints.find((x) => x.id === checkpoint.value) || checkpoints[0];
    calibratedLabel.hidden = c.temperature == null;
    if (calibratedLabel.hidden) calibrated.checked = false;
    else calibratedLabel.lastChild.textContent = ` calibrated (T = ${c.temperature.toFixed(2)})`;
  };
  const picker = h("input", { type: "file", id: "files", accept: "image/*", multiple: true });
  const drop = h("label", { class: "drop", for: "files" }, "Drop images here, or click to pick (PNG, JPEG…)");
  const results = h("div", { class: "results", id: "results" });

  const run = async () => {
    if (!files.length) return;
    const params = new URLSearchParams({ checkpoint: checkpoint.value, topk: topk.value || "3",
      gradcam: String(gradcam.checked), method: method.value, target: target.value, calibrated: String(calibrated.checked) });
    const body = new FormData();
    files.forEach((file) => body.append("files", file, file.name));
    clear(results, h("p", { class: "muted" }, `Predicting ${files.length} image(s)…`));
    try {
      const answer = await api(`/predict?${params}`, { method: "POST", body });
      clear(results, answer.calibrated ? h("p", { class: "muted", id: "calibrated-note" },
        `Calibrated probabilities: the logits divided by T = ${answer.temperature.toFixed(2)}.`) : null,
      answer.predictions.map((p, i) => resultCard(files[i], p)));
    } catch (error) {
      clear(results, errorBox(error));
    }
  };
  const take = (list) => {
    files = [...list]; // the API says which is not an image (415)
    drop.textContent = `${files.length} image(s): ${files.map((f) => f.name).join(", ")}. Drop or pick others to replace.`;
    run();
  };
  picker.addEventListener("change", () => take(picker.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
  checkpoint.addEventListener("change", () => { fillTargets(); showFaithfulness(); showCalibrated(); run(); });
  [method, target, gradcam, topk, calibrated].forEach((control) => control.addEventListener("change", run));
  showCalibrated();

  clear(root, h("h1", {}, "Predict"),
    h("section", { class: "card controls" },
      h("label", {}, "Checkpoint ", checkpoint),
      h("div", { class: "row wrap" },
        h("label", {}, "Method ", method), faithfulness, h("label", {}, "Target ", target),
        h("label", {}, "Top-k ", topk), h("label", {}, gradcam, " GradCAM"), calibratedLabel),
      picker, drop),
    results);
  showFaithfulness();
}
