// Attention over training: a training job's probe images explained epoch by epoch
// (GET /jobs/{id}/explanations). A strip per probe image: its GradCAM map at each epoch, small, and
// the slider's epoch large, with the class predicted then and its confidence under it.

import { api } from "./api.js";
import { clear, h, pct } from "./dom.js";

const STRIP_EPOCHS = 12; // small maps a strip shows at most: a longer run shows evenly spaced epochs, the last kept

/** The epochs a strip shows: all of them, or STRIP_EPOCHS evenly spaced ones from the first to the last. */
export function stripEpochs(epochs, most = STRIP_EPOCHS) {
  if (epochs.length <= most) return [...epochs];
  const picked = new Set(Array.from({ length: most }, (_, i) => epochs[Math.round((i * (epochs.length - 1)) / (most - 1))]));
  return [...picked];
}

/** The image with its heat map laid over it (the API's data URLs), `size` px a side. */
export function overlaid(probe, size, alt) {
  return h("span", { class: "probe-stack", style: `width:${size}px;height:${size}px` },
    h("img", { src: probe.image, alt, class: "pixelated" }),
    h("img", { src: probe.heatmap, alt: "", class: "heat" }));
}

/** "pred: X · 87.3%", marked wrong when X is not the true class. */
export function predictionText(probe) {
  return h("span", { class: probe.pred_class === probe.true_class ? "pred right" : "pred wrong" },
    `${probe.pred_class} · ${pct(probe.confidence, 1)}`);
}

export function probesSection(job) {
  const byEpoch = new Map(); // epoch -> the API's answer
  let epochs = [];
  const slider = h("input", { type: "range", id: "probe-epoch", min: 1, max: 1, value: 1, step: 1, disabled: true,
    "aria-label": "epoch of the maps shown large" });
  const label = h("output", { id: "probe-epoch-label", for: "probe-epoch" }, "");
  const strips = h("div", { id: "probe-strips", class: "probe-strips" });
  const note = h("p", { class: "muted", id: "probe-note" }, "The probe images appear when the first epoch ends.");
  const element = h("section", { class: "card", id: "attention" },
    h("div", { class: "section-head" }, h("h2", {}, "Attention over training"), h("span", { class: "spacer" }),
      h("label", { class: "probe-slider" }, "Epoch ", slider, " ", label)),
    note, strips);

  const fetchEpoch = async (epoch) => {
    if (!byEpoch.has(epoch)) byEpoch.set(epoch, await api(`/jobs/${job.id}/explanations?epoch=${epoch}`));
    return byEpoch.get(epoch);
  };

  let drawing = 0; // the latest draw: a slower answer for an earlier slider position is dropped
  const draw = async () => {
    const token = ++drawing;
    const wanted = Number(slider.value);
    const chosen = epochs.reduce((a, b) => (Math.abs(b - wanted) < Math.abs(a - wanted) ? b : a));
    const shown = stripEpochs(epochs);
    const answers = await Promise.all([...new Set([...shown, chosen])].map(fetchEpoch));
    if (token !== drawing) return;
    const at = (epoch) => answers.find((a) => a.epoch === epoch);
    const current = at(chosen);
    label.textContent = `${chosen} of ${epochs[epochs.length - 1]}`;
    clear(strips, current.probes.map((probe, i) => h("div", { class: "probe-strip", dataset: { index: probe.index } },
      h("figure", { class: "probe-large" }, overlaid(probe, 96, `test image ${probe.index} at epoch ${chosen}`),
        h("figcaption", {}, h("span", { class: "true" }, `true: ${probe.true_class}`), h("br"), predictionText(probe))),
      h("div", { class: "probe-epochs" }, shown.map((epoch) => {
        const then = at(epoch).probes[i];
        return h("button", { type: "button", class: "probe-thumb", "aria-pressed": String(epoch === chosen),
          title: `epoch ${epoch}: ${then.pred_class} ${pct(then.confidence, 1)}`, dataset: { epoch },
          onclick: () => { slider.value = String(epoch); draw(); } },
        overlaid(then, 40, `epoch ${epoch}`), h("span", { class: "probe-thumb-epoch" }, String(epoch)));
      })))));
    strips.dataset.epoch = String(chosen);
  };
  slider.addEventListener("input", () => draw());

  return {
    element,
    /** Called with the job's latest finished epoch: loads what is new and redraws. */
    async update(latest) {
      if (!latest || latest === epochs[epochs.length - 1]) return;
      let answer;
      try {
        answer = await fetchEpoch(latest);
      } catch (error) {
        if (error.status !== 404) throw error;
        note.textContent = "No probe images: this job ran before they were recorded.";
        return;
      }
      const following = Number(slider.value) === (epochs[epochs.length - 1] ?? 1); // at the end: stay there
      epochs = answer.epochs;
      slider.max = String(epochs[epochs.length - 1]);
      slider.min = String(epochs[0]);
      slider.disabled = epochs.length < 2;
      if (following) slider.value = slider.max;
      note.textContent = `${answer.probes.length} test images, their GradCAM map of the class predicted at each epoch`
        + `${answer.test_time_flip ? " (with test-time flip)" : ""}: move the slider, or click a small map. The attention `
        + "drift chart above: each map's correlation with its previous epoch's, averaged (1: the model looks where it looked).";
      await draw();
    },
  };
}
