// The jobs list: filters by status and kind, paging, a row per job, and a selection to compare.

import { api } from "./api.js";
import { ago, clear, datasetText, duration, h, lrText, modelText, pct, seconds, statusBadge } from "./dom.js";

const PAGE_SIZE = 20;
const REFRESH_MS = 3000; // statuses and progress change while the list is open
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const KINDS = ["", "train", "lr_finder"];

function select(name, values, current, labels) {
  return h("label", {}, `${name} `,
    h("select", { name, dataset: { filter: name } },
      values.map((v) => h("option", { value: v, selected: v === current }, labels?.[v] ?? (v || "any")))));
}

function hashFor(filters) {
  const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v !== "" && v !== 0));
  const text = params.toString();
  return `#/jobs${text ? `?${text}` : ""}`;
}

function row(job, selected, onToggle) {
  const checkbox = job.kind === "train"
    ? h("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${job.id} to compare`,
        onchange: (event) => onToggle(job.id, event.target.checked) })
    : null;
  const lr = job.lr ?? job.params.optimizer?.lr; // "auto" resolved once the job ended
  return h("tr", { dataset: { job: job.id } },
    h("td", {}, checkbox),
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8))),
    h("td", {}, job.kind === "train" ? "training" : "LR finder"),
    h("td", {}, statusBadge(job.status), job.status === "running" && job.progress.fraction !== undefined
      ? h("small", { class: "muted" }, ` ${Math.round(100 * job.progress.fraction)}%` ) : null),
    h("td", {}, datasetText(job.params)),
    h("td", {}, modelText(job.params)),
    h("td", { class: "num" }, job.kind === "train" ? `${job.params.epochs} ep, lr ${lrText(lr)}` : `${job.params.num_iter} it`),
    h("td", { class: "num" }, job.last ? pct(job.last.test_acc) : "—"),
    h("td", { class: "num", title: "the best epoch's test accuracy; chosen on the test set unless the job holds out a validation split" },
      job.best ? pct(job.best.test_acc) : "—"),
    h("td", { class: "num" }, seconds(duration(job))),
    h("td", { title: job.created_at }, ago(job.created_at)));
}

export async function render(root, { page, query }) {
  const filters = { status: query.status || "", kind: query.kind || "", page: Number(query.page || 0) };
  const selected = new Set();
  const compareButton = h("a", { class: "button", href: "#/compare", "aria-disabled": "true" }, "Compare selected");
  const onToggle = (id, on) => {
    on ? selected.add(id) : selected.delete(id);
    compareButton.href = `#/compare?ids=${[...selected].join(",")}`;
    compareButton.setAttribute("aria-disabled", String(selected.size < 2));
    compareButton.textContent = `Compare selected (${selected.size})`;
  };
  const filterBar = h("div", { class: "toolbar" },
    select("status", STATUSES, filters.status),
    select("kind", KINDS, filters.kind, { "": "any", train: "training", lr_finder: "LR finder" }),
    h("span", { class: "spacer" }),
    compareButton,
    h("a", { class: "button primary", href: "#/new" }, "New job"));
  filterBar.addEventListener("change", (event) => {
    const name = event.target.dataset.filter;
    if (name) location.hash = hashFor({ ...filters, [name]: event.target.value, page: 0 });
  });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  clear(root, h("h1", {}, "Jobs"), filterBar,
    h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["", "id", "kind", "status", "dataset", "model", "settings", "last acc", "best acc",
        "duration", "created"].map((c) => h("th", {}, c)))), body)), pager);

  page.poll(async () => {
    const params = new URLSearchParams({ limit: PAGE_SIZE, offset: filters.page * PAGE_SIZE });
    if (filters.status) params.set("status", filters.status);
    if (filters.kind) params.set("kind", filters.kind);
    const { jobs, total } = await api(`/jobs?${params}`);
    if (!page.alive) return false;
    clear(body, jobs.length ? jobs.map((job) => row(job, selected, onToggle))
      : h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No jobs yet. ", h("a", { href: "#/new" }, "Start one"))));
    const last = Math.max(0, Math.ceil(total / PAGE_SIZE) - 1);
    clear(pager,
      h("a", { class: "button small", href: hashFor({ ...filters, page: filters.page - 1 }),
        "aria-disabled": String(filters.page <= 0) }, "← newer"),
      h("span", {}, ` page ${filters.page + 1} of ${last + 1} · ${total} jobs `),
      h("a", { class: "button small", href: hashFor({ ...filters, page: filters.page + 1 }),
        "aria-disabled": String(filters.page >= last) }, "older →"));
    return true;
  }, REFRESH_MS);
}
