// When not to trust a finished training job's model: the "Calibration" card (the reliability diagram
// drawn from the metrics' `calibration` bins, ECE before and after the temperature) and the "Likely label
// errors" gallery (GET /jobs/{id}/label-issues: GradCAM of the given and of the predicted class side by side).

import { api, blobUrl } from "./api.js";
import { clear, errorBox, h, openLightbox, pct } from "./dom.js";

export const ISSUES_PAGE = 24; // tiles a page
const SIDE = 320, PAD = 38; // CSS px: the reliability diagram's canvas and its axis margin

function drawReliability(canvas, calibration) {
  const ratio = window.devicePixelRatio || 1; // as many canvas pixels as the screen has: sharp on a high-DPI one
  canvas.width = canvas.height = Math.round(SIDE * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const plot = SIDE - 2 * PAD + 8;
  const x = (v) => PAD + v * plot, y = (v) => SIDE - PAD - v * plot;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#d1d5db";
  for (const t of [0, 0.5, 1]) {
    ctx.fillText(String(t), x(t) - 6, SIDE - PAD + 14);
    ctx.fillText(String(t), PAD - 22, y(t) + 4);
  }
  ctx.fillText("confidence →", x(0.5) - 30, SIDE - 4);
  ctx.save();
  ctx.translate(10, y(0.5) + 24);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText("accuracy →", 0, 0);
  ctx.restore();
  ctx.strokeRect(x(0), y(1), plot, plot);
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(x(0), y(0));
  ctx.lineTo(x(1), y(1));
  ctx.stroke();
  ctx.setLineDash([]);
  // the bars: each bin's accuracy over its range; the gap to its mean confidence in red
  const total = calibration.bins.reduce((sum, b) => sum + b.count, 0) || 1;
  for (const b of calibration.bins) {
    if (!b.count) continue;
    const width = (b.upper - b.lower) * plot - 1;
    ctx.fillStyle = `rgba(37,99,235,${(0.35 + 0.65 * Math.min(1, (8 * b.count) / total)).toFixed(3)})`;
    ctx.fillRect(x(b.lower), y(b.accuracy), width, y(0) - y(b.accuracy));
    // opaque, so that it reads as red whether it lies above the bar (over-confident) or inside it
    ctx.fillStyle = "#fca5a5";
    ctx.strokeStyle = "#dc2626";
    const [top, bottom] = [Math.max(b.accuracy, b.confidence), Math.min(b.accuracy, b.confidence)];
    ctx.fillRect(x(b.lower), y(top), width, y(bottom) - y(top));
    ctx.strokeRect(x(b.lower) + 0.5, y(top) + 0.5, width - 1, y(bottom) - y(top) - 1);
  }
  // after the temperature: each bin's (confidence, accuracy) as a point
  ctx.fillStyle = "#16a34a";
  for (const b of calibration.calibrated.bins) {
    if (!b.count) continue;
    ctx.beginPath();
    ctx.arc(x(b.confidence), y(b.accuracy), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

/** The "Calibration" card's body for a job's metrics; a note when it has none. */
export function calibrationView(calibration) {
  if (!calibration) return h("p", { class: "muted" }, "No calibration: the job ended before it was measured.");
  const t = calibration.temperature;
  const canvas = h("canvas", { id: "reliability", style: `width:${SIDE}px;max-width:100%;height:auto`, role: "img",
    "aria-label": `reliability diagram: ECE ${calibration.ece.toFixed(3)} before, ${calibration.calibrated.ece.toFixed(3)} after T`,
    dataset: { bins: String(calibration.bins.filter((b) => b.count).length) } });
  drawReliability(canvas, calibration);
  const after = t.applied
    ? `${calibration.calibrated.ece.toFixed(3)} with T = ${t.value.toFixed(2)} (fitted on the validation split; `
      + "/predict?calibrated=true applies it)"
    : `${calibration.calibrated.ece.toFixed(3)} with T = ${t.value.toFixed(2)}, fitted on the test set itself: optimistic, `
      + "and not applied (the run held out no validation split)";
  return h("div", { class: "calibration" }, canvas,
    h("div", {},
      h("p", { id: "ece" }, "Expected calibration error (test set, 15 bins): ", h("strong", {}, calibration.ece.toFixed(3)),
        calibration.validation ? ` · validation ${calibration.validation.ece.toFixed(3)}` : ""),
      h("p", { id: "ece-after" }, "After temperature scaling: ", after),
      h("p", { class: "muted" }, "Bars: each bin's accuracy (its top); red: the gap between that and the bin's mean ",
        "confidence (a calibrated model follows the dashed diagonal). Green points: the bins after dividing the logits by T.")));
}

function overlay(url, label, caption) {
  const image = h("img", { alt: `${caption}: GradCAM of ${label}`, width: 96, height: 96, class: "pixelated" });
  const figure = h("figure", { class: "zoom" }, url ? image : h("div", { class: "no-overlay" }, "no overlay"),
    h("figcaption", {}, label));
  if (url) {
    figure.addEventListener("click", () => openLightbox(image.src, image.alt));
    blobUrl(url).then((src) => (image.src = src), () => image.replaceWith(h("div", { class: "no-overlay" }, "failed")));
  }
  return figure;
}

function issueTile(issue, set) {
  const caption = `#${issue.rank}: ${set} image ${issue.index}, labelled ${issue.given_class}, predicted ${issue.predicted_class}`;
  return h("div", { class: "issue-tile", dataset: { index: String(issue.index) }, title: caption },
    h("div", { class: "issue-pair" },
      overlay(issue.given_overlay_url, `given: ${issue.given_class}`, caption),
      overlay(issue.predicted_overlay_url, `predicted: ${issue.predicted_class}`, caption)),
    h("p", {}, h("span", { class: "true" }, issue.given_class), " → ", h("strong", {}, issue.predicted_class), h("br"),
      `score ${issue.score.toFixed(3)} · p(given) ${pct(issue.given_probability, 1)}`));
}

/** The "Likely label errors" gallery of a finished job, paged. */
export function labelIssuesGallery(job) {
  const tiles = h("div", { class: "issue-tiles", id: "issue-tiles" });
  const about = h("p", { class: "muted", id: "issues-about" });
  const range = h("span", { class: "range", id: "issues-range" });
  const prev = h("button", { type: "button", id: "issues-prev", onclick: () => load(offset - ISSUES_PAGE) }, "‹ Prev");
  const next = h("button", { type: "button", id: "issues-next", onclick: () => load(offset + ISSUES_PAGE) }, "Next ›");
  let offset = 0;
  async function load(to) {
    offset = Math.max(0, to);
    try {
      const page = await api(`/jobs/${job.id}/label-issues?offset=${offset}&limit=${ISSUES_PAGE}`);
      const judge = page.set === "train" ? "the fold model that never saw it" : "the best checkpoint";
      about.textContent = `${page.total} of the ${page.scored} ${page.set} images have a label ${judge} `
        + "contradicts (cleanlab's confident learning), the most likely error first. Left: GradCAM of the given "
        + "label; right: of the predicted class. Score: cleanlab's label quality, lower is more suspect.";
      const shown = page.issues.length;
      range.textContent = shown ? `${offset + 1}–${offset + shown} of ${page.total}` : `0 of ${page.total}`;
      prev.disabled = offset === 0;
      next.disabled = offset + shown >= page.total;
      clear(tiles, shown ? page.issues.map((issue) => issueTile(issue, page.set)) : h("p", { class: "muted" }, "None found."));
    } catch (error) {
      clear(tiles, error.status === 404 ? h("p", { class: "muted" }, error.message) : errorBox(error));
    }
  }
  load(0);
  return h("div", { id: "label-issues" }, about, tiles, h("div", { class: "pager" }, prev, range, next));
}
