// Hash routing: #/jobs, #/jobs/<id>, #/new, #/compare?ids=a,b, #/predict, #/datasets, #/datasets/<id>.
// Each page renders into <main> and registers what to stop (timers, charts) when the user leaves it.

import { storedKey } from "./api.js";
import { clear, errorBox, h, query } from "./dom.js";
import * as compare from "./compare.js";
import * as datasets from "./datasets.js";
import * as form from "./form.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as predict from "./predict.js";

const ROUTES = [
  [/^\/?$/, jobs, "jobs"],
  [/^\/jobs\/?$/, jobs, "jobs"],
  [/^\/jobs\/([\w-]+)$/, job, "jobs"],
  [/^\/new$/, form, "new"],
  [/^\/compare$/, compare, "compare"],
  [/^\/predict$/, predict, "predict"],
  [/^\/datasets\/?$/, datasets, "datasets"],
  [/^\/datasets\/([0-9a-f]{32})$/, datasets, "datasets"],
];

let current = null;

class Page {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  /** Calls `fn` now and then every `ms` until it returns false or the user leaves the page. */
  poll(fn, ms) {
    let timer = null;
    const tick = async () => {
      if (!this.alive) return;
      let again = true;
      try {
        again = (await fn()) !== false;
      } catch (error) {
        console.error(error);
      }
      if (again && this.alive) timer = setTimeout(tick, ms);
    };
    this.onLeave(() => clearTimeout(timer));
    tick();
  }
  leave() {
    this.alive = false;
    this.cleanups.forEach((fn) => fn());
  }
}

async function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  current?.leave();
  current = new Page();
  const main = document.getElementById("main");
  const match = ROUTES.map(([pattern, module, nav]) => [path.match(pattern), module, nav]).find(([m]) => m);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === match?.[2]));
  if (!match) {
    clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    return;
  }
  const [groups, module] = match;
  clear(main, h("p", { class: "muted" }, "Loading…"));
  try {
    await module.render(main, { page: current, args: groups.slice(1), query: query(search) });
  } catch (error) {
    if (current.alive) clear(main, errorBox(error));
  }
}

document.getElementById("key-button").hidden = !storedKey();
document.getElementById("key-button").addEventListener("click", () => {
  localStorage.removeItem("lrcam.apiKey");
  location.reload();
});
window.addEventListener("hashchange", route);
route();
