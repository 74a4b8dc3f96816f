// A finished training job's test examples as tiles (GET /jobs/{id}/examples): GradCAM overlays with
// their true and predicted class and confidence, paged, sorted and filtered by class, and the
// confusion matrix (GET /jobs/{id}/confusion) as a table whose cells filter the tiles.

import { api, blobUrl } from "./api.js";
import { clear, errorBox, h, openLightbox, pct } from "./dom.js";

export const PAGE = 50; // tiles a page
export const MAX_TABLE_CLASSES = 30; // more classes than this: the confusion matrix stays a PNG

const KINDS = [["misclassified", "Misclassified"], ["correct", "Correct"], ["all", "All test images"]];
const SORTS = [["-confidence", "Most confident first"], ["confidence", "Least confident first"], ["index", "Test-set order"]];

function select(id, label, options, value, onchange) {
  const element = h("select", { id, onchange: () => onchange(element.value) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return h("label", {}, `${label} `, element);
}

// Cells shaded by count: the diagonal (right) in blue, the rest (mistakes) in red, each scaled to its
// own largest count so that a few mistakes still show beside hundreds of right answers.
function shade(count, max, right) {
  const alpha = max ? count / max : 0;
  return `background:rgba(${right ? "37,99,235" : "220,38,38"},${(0.08 + 0.82 * alpha).toFixed(3)});`
    + (alpha > 0.55 ? "color:#fff;" : "");
}

// The table marks the cell whose images the tiles show (`mark(trueName, predName)`, "" for any).
export function confusionTable({ classes, confusion }, onPick) {
  const diagonal = Math.max(0, ...classes.map((_, i) => confusion[i][i]));
  const off = Math.max(0, ...confusion.flatMap((row, i) => row.filter((_, j) => j !== i)));
  const table = h("table", { class: "confusion", id: "confusion-table" },
    h("thead", {}, h("tr", {}, h("th", { class: "corner" }, "true ↓ · pred →"),
      classes.map((name) => h("th", { class: "pred", scope: "col", title: `predicted ${name}` }, h("span", {}, name))))),
    h("tbody", {}, classes.map((trueName, i) => h("tr", {}, h("th", { scope: "row" }, trueName),
      confusion[i].map((count, j) => h("td", { style: count ? shade(count, i === j ? diagonal : off, i === j) : null },
        h("button", {
          type: "button", class: "cell", disabled: count === 0, dataset: { true: trueName, pred: classes[j] },
          title: `${count} test images of ${trueName} predicted as ${classes[j]}`,
          onclick: () => onPick(trueName, classes[j]),
        }, String(count))))))));
  const mark = (trueName, predName) => table.querySelectorAll("button.cell").forEach((cell) =>
    cell.setAttribute("aria-pressed", String(cell.dataset.true === trueName && cell.dataset.pred === predName)));
  return { element: h("div", { class: "table-wrap" }, table), mark };
}

function tile(example) {
  const caption = `#${example.index} · true ${example.true_class} · predicted ${example.pred_class} `
    + `(${pct(example.confidence, 1)}; true class ${pct(example.true_probability, 1)})`;
  const image = h("img", { alt: caption, width: 96, height: 96, class: "pixelated" });
  const figure = h("figure", { class: `example-tile${example.true_class === example.pred_class ? " right" : ""}`,
    dataset: { index: String(example.index) }, title: caption },
  example.overlay_url ? image : h("div", { class: "no-overlay" }, "no overlay"),
  h("figcaption", {}, h("span", { class: "true" }, example.true_class), " → ",
    h("strong", { class: "pred" }, example.pred_class), h("br"), pct(example.confidence, 1)));
  if (example.overlay_url) {
    figure.classList.add("zoom");
    figure.addEventListener("click", () => openLightbox(image.src, caption));
    blobUrl(example.overlay_url).then((src) => (image.src = src), () => image.replaceWith(h("div", { class: "no-overlay" }, "failed")));
  }
  return figure;
}

// The tiles with their controls; `explorer.pick(true, pred)` shows one confusion cell's images and
// `explorer.listen(f)` calls f(state) whenever a filter changes.
export function examplesExplorer(job, classes) {
  const state = { kind: "misclassified", sort: "-confidence", true_class: "", pred_class: "", offset: 0 };
  const classOptions = [["", "any"], ...classes.map((name) => [name, name])];
  const tiles = h("div", { class: "example-tiles", id: "example-tiles" });
  const range = h("span", { class: "range", id: "examples-range" });
  const prev = h("button", { type: "button", id: "examples-prev", onclick: () => go(state.offset - PAGE) }, "‹ Prev");
  const next = h("button", { type: "button", id: "examples-next", onclick: () => go(state.offset + PAGE) }, "Next ›");
  const clearFilters = h("button", { type: "button", class: "small", id: "examples-clear", onclick: () => set({ true_class: "", pred_class: "" }) }, "Clear class filters");
  const controls = h("div", { class: "example-controls" });
  const listeners = [];
  let request = 0;

  const drawControls = () => clear(controls,
    select("examples-kind", "Show", KINDS, state.kind, (kind) => set({ kind })),
    select("examples-true", "True class", classOptions, state.true_class, (v) => set({ true_class: v })),
    select("examples-pred", "Predicted", classOptions, state.pred_class, (v) => set({ pred_class: v })),
    select("examples-sort", "Sort", SORTS, state.sort, (sort) => set({ sort })),
    state.true_class || state.pred_class ? clearFilters : null);

  async function load() {
    const mine = ++request;
    const query = new URLSearchParams({ kind: state.kind, sort: state.sort, offset: state.offset, limit: PAGE,
      true_class: state.true_class, pred_class: state.pred_class });
    tiles.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/jobs/${job.id}/examples?${query}`);
      if (mine !== request) return; // a later choice is on its way
      const shown = page.examples.length;
      range.textContent = shown ? `${state.offset + 1}–${state.offset + shown} of ${page.total}` : `0 of ${page.total}`;
      prev.disabled = state.offset === 0;
      next.disabled = state.offset + shown >= page.total;
      clear(tiles, shown ? page.examples.map(tile) : h("p", { class: "muted" }, "No test images match."));
      tiles.dataset.indices = page.examples.map((e) => e.index).join(",");
    } catch (error) {
      if (mine === request) clear(tiles, errorBox(error));
    } finally {
      if (mine === request) tiles.removeAttribute("aria-busy");
    }
  }
  function go(offset) {
    state.offset = Math.max(0, offset);
    return load();
  }
  function set(changes) {
    Object.assign(state, changes, { offset: 0 });
    drawControls();
    listeners.forEach((listener) => listener(state));
    return load();
  }

  drawControls();
  const element = h("div", { class: "examples", id: "examples" }, controls,
    h("p", { class: "muted" }, "GradCAM of the predicted class over each test image, from the best checkpoint: ",
      "true class → predicted class and the model's confidence. Click a tile for a larger view."),
    tiles, h("div", { class: "pager" }, prev, range, next));
  load();
  return {
    element,
    listen(listener) {
      listeners.push(listener);
    },
    pick(trueClass, predClass) {
      element.scrollIntoView({ block: "start" });
      return set({ kind: "all", true_class: trueClass, pred_class: predClass });
    },
  };
}
