// The jobs list: filters (status, kind, dataset, model, tag) and a search box, sorting by the column
// headers, paging, a row per job (its name and tags), and a selection to compare. Every choice lives
// in the URL hash, so back and forward step through them.

import { api, uploadedNames } from "./api.js";
import { ago, clear, datasetText, duration, h, lrText, modelText, pct, seconds, statusBadge } from "./dom.js";

const PAGE_SIZE = 20;
const REFRESH_MS = 3000; // statuses and progress change while the list is open
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const KINDS = ["", "train", "lr_finder", "audit"];
const KIND_NAMES = { train: "training", lr_finder: "LR finder", audit: "label audit" };

function runLength(job, lr) {
  if (job.kind === "lr_finder") return `${job.params.num_iter} it`;
  if (job.kind === "audit") return `${job.params.folds} × ${job.params.epochs} ep`;
  return `${job.params.epochs} ep, lr ${lrText(lr)}`;
}
const DATASETS = ["", "cifar10", "fashion_mnist", "image_folder", "uploaded"];
const MODELS = ["", "resnet18", "custom_resnet"];
const FILTERS = ["status", "kind", "dataset", "model", "tag", "q", "sort", "page"];
const DEFAULT_SORT = "created";
// Column -> the API's sort key; each column's first click sorts its natural way (the API's), the next reverses.
const COLUMNS = [
  ["", null], ["run", "name"], ["kind", null], ["status", null], ["dataset", null], ["model", null],
  ["settings", null], ["last acc", "last"], ["best acc", "best"], ["duration", "duration"], ["created", "created"],
];
const seenTags = new Set(); // every tag the list has shown, offered by the tag field

function select(name, values, current, labels) {
  return h("label", {}, `${name} `,
    h("select", { name, dataset: { filter: name } },
      values.map((v) => h("option", { value: v, selected: v === current }, labels?.[v] ?? (v || "any")))));
}

export function hashFor(filters) {
  const kept = Object.entries(filters).filter(([k, v]) => v !== "" && v !== 0 && !(k === "sort" && v === DEFAULT_SORT));
  const text = new URLSearchParams(kept).toString();
  return `#/jobs${text ? `?${text}` : ""}`;
}

export function displayName(job) {
  return job.name || job.id.slice(0, 8);
}

export function tagChips(tags, filters) {
  return h("span", { class: "chips" }, (tags || []).map((tag) =>
    filters ? h("a", { class: "chip", href: hashFor({ ...filters, tag, page: 0 }), title: `only jobs tagged ${tag}` }, tag)
      : h("span", { class: "chip" }, tag)));
}

function statusCell(job) {
  const running = job.status === "running" && job.progress.fraction !== undefined;
  return h("td", {}, statusBadge(job.status),
    running ? h("small", { class: "muted" }, ` ${Math.round(100 * job.progress.fraction)}%`) : null,
    job.status === "queued" && job.queue_position ? h("small", { class: "muted queue" }, ` · #${job.queue_position} in line`) : null);
}

function row(job, selected, onToggle, filters, names) {
  const checkbox = job.kind === "train"
    ? h("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${displayName(job)} to compare`,
        onchange: (event) => onToggle(job.id, event.target.checked) })
    : null;
  const lr = job.lr ?? job.params.optimizer?.lr; // "auto" resolved once the job ended
  return h("tr", { dataset: { job: job.id } },
    h("td", {}, checkbox),
    h("td", { class: "run" },
      h("a", { href: `#/jobs/${job.id}`, class: job.name ? "run-name" : "mono run-name", title: job.note || job.id }, displayName(job)),
      job.name ? h("small", { class: "mono muted" }, ` ${job.id.slice(0, 8)}`) : null,
      job.tags?.length ? tagChips(job.tags, filters) : null),
    h("td", {}, KIND_NAMES[job.kind]),
    statusCell(job),
    h("td", {}, datasetText(job.params, names)),
    h("td", {}, modelText(job.params)),
    h("td", { class: "num" }, runLength(job, lr)),
    h("td", { class: "num" }, job.last ? pct(job.last.test_acc) : "—"),
    h("td", { class: "num", title: "the best epoch's test accuracy; chosen on the test set unless the job holds out a validation split" },
      job.best ? pct(job.best.test_acc) : "—"),
    h("td", { class: "num" }, seconds(duration(job))),
    h("td", { title: job.created_at }, ago(job.created_at)));
}

function header(filters) {
  const current = filters.sort.replace(/^-/, "");
  const reversed = filters.sort.startsWith("-");
  return h("tr", {}, COLUMNS.map(([label, key]) => {
    if (!key) return h("th", {}, label);
    const active = current === key;
    const next = active && !reversed ? `-${key}` : key;
    // the API's natural order: created newest first, name A-Z, accuracies and duration highest first
    const natural = key === "name" ? "ascending" : "descending";
    const flipped = natural === "ascending" ? "descending" : "ascending";
    return h("th", { "aria-sort": active ? (reversed ? flipped : natural) : "none", dataset: { sort: key } },
      h("a", { href: hashFor({ ...filters, sort: next, page: 0 }), class: "sort" }, label,
        active ? ((reversed ? flipped : natural) === "ascending" ? " ▲" : " ▼") : ""));
  }));
}

function toolbar(filters, compareButton) {
  const tagOptions = h("datalist", { id: "tag-options" }, [...seenTags].sort().map((t) => h("option", { value: t })));
  return h("div", { class: "toolbar" },
    select("status", STATUSES, filters.status),
    select("kind", KINDS, filters.kind, { "": "any", ...KIND_NAMES }),
    select("dataset", DATASETS, filters.dataset),
    select("model", MODELS, filters.model),
    h("label", {}, "tag ", h("input", { type: "text", name: "tag", list: "tag-options", value: filters.tag, size: 10,
      dataset: { filter: "tag" }, placeholder: "any" })), tagOptions,
    h("label", {}, "search ", h("input", { type: "search", name: "q", value: filters.q, size: 18, id: "jobs-search",
      dataset: { filter: "q" }, placeholder: "name, note, id, tag" })),
    h("span", { class: "spacer" }),
    compareButton,
    h("a", { class: "button primary", href: "#/new" }, "New job"));
}

export async function render(root, { page, query }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query[name] || ""]));
  filters.sort ||= DEFAULT_SORT;
  filters.page = Number(query.page || 0);
  const selected = new Set();
  const compareButton = h("a", { class: "button", href: "#/compare", "aria-disabled": "true", id: "compare-selected" }, "Compare selected");
  const onToggle = (id, on) => {
    on ? selected.add(id) : selected.delete(id);
    compareButton.href = `#/compare?ids=${[...selected].join(",")}`;
    compareButton.setAttribute("aria-disabled", String(selected.size < 2));
    compareButton.textContent = `Compare selected (${selected.size})`;
  };
  const filterBar = toolbar(filters, compareButton);
  filterBar.addEventListener("change", (event) => { // a text field changes on Enter or when it loses focus
    const name = event.target.dataset.filter;
    if (name) location.hash = hashFor({ ...filters, [name]: event.target.value.trim(), page: 0 });
  });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const tagOptions = filterBar.querySelector("#tag-options");
  clear(root, h("h1", {}, "Jobs"), filterBar,
    h("div", { class: "table-wrap" }, h("table", { class: "jobs" }, h("thead", {}, header(filters)), body)), pager);

  let names = new Map(); // uploaded datasets: id -> name
  const asked = new Set(); // the dataset ids looked up so far
  page.poll(async () => {
    const params = new URLSearchParams({ limit: PAGE_SIZE, offset: filters.page * PAGE_SIZE });
    for (const name of ["status", "kind", "dataset", "model", "tag", "q"]) if (filters[name]) params.set(name, filters[name]);
    if (filters.sort !== DEFAULT_SORT) params.set("sort", filters.sort);
    const { jobs, total } = await api(`/jobs?${params}`);
    const unknown = jobs.map((job) => job.params.dataset).filter((d) => d?.name === "uploaded" && !asked.has(d.id));
    if (unknown.length) { // a dataset uploaded since the page opened: its name (asked once: it may be deleted)
      unknown.forEach((d) => asked.add(d.id));
      names = await uploadedNames().catch(() => names);
    }
    if (!page.alive) return false;
    jobs.forEach((job) => (job.tags || []).forEach((tag) => seenTags.add(tag)));
    clear(tagOptions, [...seenTags].sort().map((t) => h("option", { value: t })));
    const filtered = FILTERS.some((name) => !["sort", "page"].includes(name) && filters[name]);
    clear(body, jobs.length ? jobs.map((job) => row(job, selected, onToggle, filters, names))
      : h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, filtered
        ? ["No job matches these filters. ", h("a", { href: "#/jobs" }, "Show every job")]
        : ["No jobs yet. ", h("a", { href: "#/new" }, "Start one")])));
    const last = Math.max(0, Math.ceil(total / PAGE_SIZE) - 1);
    clear(pager,
      h("a", { class: "button small", href: hashFor({ ...filters, page: filters.page - 1 }),
        "aria-disabled": String(filters.page <= 0) }, "← previous"),
      h("span", {}, ` page ${filters.page + 1} of ${last + 1} · ${total} jobs `),
      h("a", { class: "button small", href: hashFor({ ...filters, page: filters.page + 1 }),
        "aria-disabled": String(filters.page >= last) }, "next →"));
    return true;
  }, REFRESH_MS);
}
