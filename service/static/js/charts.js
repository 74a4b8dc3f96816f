// Line charts on uPlot (vendored, global `uPlot`): sized to their box, redrawn on resize, updated in
// place while a job runs, with optional vertical markers (the LR finder's suggestions).

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]; // epochs, steps

function expText(value) {
  return value == null ? "" : value.toExponential(0); // uPlot passes null for ticks it leaves unlabelled
}

/** An accuracy axis: the data's span padded, at least 5 points wide, within 0-100%. */
function percentRange(u, min, max) {
  if (min == null || max == null) return [0, 1];
  const pad = Math.max(0.025, (max - min) * 0.08);
  return [Math.max(0, min - pad), Math.min(1, max + pad)];
}

const LABEL_ROW = 14; // px between the rows of marker labels
const LABEL_GAP = 6; // px kept between two labels on one row

/** Each label beside its line (left of it where the right edge would cut it), on the first row where
 * it overlaps no other label: close markers never print over each other. Boxes in CSS pixels. */
export function layoutLabels(items, left, right) {
  const rows = [];
  return items.map((item) => {
    const x0 = item.x + 4 + item.width > right ? Math.max(left, item.x - 4 - item.width) : item.x + 4;
    const box = { x0, x1: x0 + item.width };
    let row = rows.findIndex((placed) => placed.every((b) => box.x1 + LABEL_GAP <= b.x0 || box.x0 >= b.x1 + LABEL_GAP));
    if (row < 0) row = rows.push([]) - 1;
    rows[row].push(box);
    return { ...box, row };
  });
}

function markerPlugin(markers) {
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          const ratio = devicePixelRatio;
          const { left, top, width, height } = u.bbox;
          ctx.save();
          ctx.font = `${12 * ratio}px system-ui, sans-serif`;
          ctx.textAlign = "left"; // uPlot leaves the y axis's "right" set: labels would end at their box's start
          ctx.textBaseline = "alphabetic";
          const shown = markers.map((marker) => ({ marker, x: u.valToPos(marker.x, "x", true) }))
            .filter(({ x }) => isFinite(x)).sort((a, b) => a.x - b.x);
          const boxes = layoutLabels(shown.map(({ marker, x }) =>
            ({ x: x / ratio, width: ctx.measureText(marker.label).width / ratio })), left / ratio, (left + width) / ratio);
          shown.forEach(({ marker, x }, index) => {
            ctx.strokeStyle = ctx.fillStyle = marker.color;
            ctx.setLineDash([5 * ratio, 4 * ratio]);
            ctx.lineWidth = 1.5 * ratio;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.fillText(marker.label, boxes[index].x0 * ratio, top + (14 + LABEL_ROW * boxes[index].row) * ratio);
          });
          ctx.restore();
          u.root.dataset.labels = JSON.stringify(boxes.map((b) => [Math.round(b.x0), Math.round(b.x1), b.row]));
        },
      ],
    },
  };
}

/** uPlot's options for a chart of `series` in `box` (see lineChart). */
function plotOptions(box, series, options) {
  const yFormat = options.percentY ? (v) => (v == null ? "—" : `${(100 * v).toFixed(1)}%`) : undefined;
  return {
    title: options.title,
    width: Math.max(box.clientWidth, 200),
    height: options.height || 240,
    plugins: options.markers ? [markerPlugin(options.markers)] : [],
    cursor: options.sync ? { sync: { key: options.sync } } : {},
    scales: {
      x: { time: false, distr: options.logX ? 3 : 1 },
      y: { distr: options.logY ? 3 : 1, range: options.yRange ?? (options.percentY ? percentRange : undefined) },
    },
    axes: [
      { label: options.xLabel, values: options.logX ? (u, vals) => vals.map(expText) : undefined,
        incrs: options.integerX ? INTEGER_STEPS : undefined },
      { label: options.yLabel, values: yFormat ? (u, vals) => vals.map(yFormat) : undefined, size: 60 },
    ],
    legend: { live: true },
    series: [
      { label: options.xLabel || "x", value: options.logX ? (u, v) => (v == null ? "—" : v.toExponential(2)) : undefined },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: s.width || 2,
        dash: s.dash,
        spanGaps: true,
        value: yFormat ? (u, v) => yFormat(v) : (u, v) => (v == null ? "—" : Number(v).toPrecision(4)),
        points: { show: options.points ?? "auto" },
      })),
    ],
  };
}

/**
 * A chart in `box`: `series` = [{label, color, dash}], data = [xs, ys1, ys2...].
 * options: {title, xLabel, yLabel, logX, logY, percentY, yRange (uPlot's range function), integerX, markers, points,
 * height, sync (a key: charts with the same key move one cursor)}. Returns {update(data), setOptions(changes): drawn
 * again with them, data(), options, series, plot(), destroy()}; the box keeps the uPlot instance as `box.uplot`.
 */
export function lineChart(box, series, data, options = {}) {
  let current = data;
  let plot = null;
  const handle = {
    series,
    options: { ...options },
    update(next) {
      current = next;
      plot.setData(next);
    },
    setOptions(changes) {
      Object.assign(handle.options, changes);
      plot.destroy();
      plot = box.uplot = new uPlot(plotOptions(box, series, handle.options), current, box);
      box.dispatchEvent(new Event("chartdrawn"));
    },
    data: () => current,
    plot: () => plot,
    destroy() {
      observer.disconnect();
      plot.destroy();
    },
  };
  plot = box.uplot = new uPlot(plotOptions(box, series, handle.options), data, box);
  const observer = new ResizeObserver(() => {
    const width = Math.max(box.clientWidth, 200);
    if (Math.abs(width - plot.width) > 2) plot.setSize({ width, height: plot.height });
  });
  observer.observe(box);
  return handle;
}
