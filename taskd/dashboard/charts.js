// @ts-check
// Charts drawn as SVG: stacked bars, bars of durations and lanes of ticks on a time line. The shapes
// stretch to the width they are given; their labels are HTML beside them, so that text keeps its
// size at any width. Colours come from the stylesheet (series-* classes), in light and dark alike.
// Each chart is a <figure>: the drawing has an accessible name, and the caption is its legend.

import { h } from "./dom.js";

/** @typedef {import("./dom.js").Child} Child */
/** @typedef {{ key: string, label: string }} Series  a kind of value; its colour is the class series-KEY */
/**
 * A label on the axis: `at` from 0 (left) to 1 (right); a minor one is left out on a narrow screen.
 * @typedef {{ at: number, label: string, minor?: boolean }} Mark
 */

/** @type {Series[]} the outcomes of a finished run, in the legends' order */
export const OUTCOMES = [
  { key: "completed", label: "completed" },
  { key: "failed", label: "failed" },
  { key: "timeout", label: "timed out" },
  { key: "stopped", label: "stopped" },
  { key: "interrupted", label: "interrupted" },
];

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 1000;
const HEIGHT = 100;
/** The fewest bars a chart of values is drawn for: fewer take their share of its width, no more. */
const BARS = 60;

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 * @param {...(SVGElement | string)} children
 */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  el.append(...children);
  return /** @type {SVGElement} */ (el);
}

/** An SVG element's tooltip. @param {string} text */
function tip(text) {
  return svg("title", {}, text);
}

/**
 * A drawing that stretches to its box; its name is read as that of an image.
 * @param {string} label
 * @param {SVGElement[]} shapes
 */
function canvas(label, shapes) {
  return svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img", "aria-label": label, class: "drawing" },
    tip(label), ...shapes);
}

/**
 * Labels under a drawing, each at its place.
 * @param {Mark[]} marks
 * @param {boolean} [ending]  the last label ends at its place, rather than being centred on it
 */
function axis(marks, ending = false) {
  return h("div", { class: "x-axis", "aria-hidden": "true" }, marks.map((mark, i) => {
    // Labels at the edges keep inside the chart: they start at its left edge, or end at its right.
    const last = ending && i === marks.length - 1 && i > 0;
    const edge = mark.at <= 0.02 ? "start" : mark.at >= 0.98 || last ? "end" : "";
    const label = h("span", { class: `${edge}${mark.minor ? " minor" : ""}`.trim() || null }, mark.label);
    label.style.left = `${(mark.at * 100).toFixed(2)}%`;
    return label;
  }));
}

/** @param {string} key  the series, coloured by the stylesheet @param {Child[]} text */
function key(key, ...text) {
  return h("span", { class: "key" }, h("span", { class: `swatch series-${key}`, "aria-hidden": "true" }), " ", ...text);
}

/**
 * Bars of stacked values, one per column, the series in order from the bottom. Each piece's
 * tooltip says its column and count; the legend gives each series' total.
 * @param {object} spec
 * @param {string} spec.label  what the chart shows, its accessible name
 * @param {Series[]} spec.series
 * @param {Array<{ title: string, values: Record<string, number | undefined> }>} spec.columns  title: the column's time
 * @param {Mark[]} spec.axis
 * @param {string} spec.unit  what is counted, plural
 */
export function stackedBars({ label, series, columns, axis: marks, unit }) {
  const totals = columns.map((column) => series.reduce((sum, s) => sum + (column.values[s.key] || 0), 0));
  const most = Math.max(1, ...totals);
  const step = WIDTH / Math.max(1, columns.length);
  /** @type {SVGElement[]} */
  const shapes = [];
  columns.forEach((column, i) => {
    let base = HEIGHT;
    for (const s of series) {
      const value = column.values[s.key] || 0;
      if (!value) continue;
      const tall = (value / most) * HEIGHT;
      base -= tall;
      shapes.push(svg("rect", { class: `series-${s.key}`, x: (i * step + step * 0.1).toFixed(2), y: base.toFixed(2), width: (step * 0.8).toFixed(2), height: tall.toFixed(2) },
        tip(`${column.title}: ${value} ${s.label}`)));
    }
  });
  const sums = series.map((s) => columns.reduce((sum, column) => sum + (column.values[s.key] || 0), 0));
  const said = series.map((s, i) => `${sums[i]} ${s.label}`).join(", ");
  return h("figure", { class: "chart" },
    h("div", { class: "plot" }, h("span", { class: "y-max muted" }, `${most} ${unit}`), canvas(`${label}: ${said}`, shapes)),
    axis(marks),
    h("figcaption", { class: "legend" }, series.map((s, i) => key(s.key, `${s.label} ${sums[i].toLocaleString()}`))));
}

/**
 * One bar per item, as tall as its value and coloured by its kind, with lines across at marked
 * values (a median, a percentile); each bar links to `href` and says `title` on hover. Bars keep a
 * narrow width: a few items take the left of the chart, not all of it.
 * @param {object} spec
 * @param {string} spec.label
 * @param {Array<{ kind: string, value: number, title: string, href: string }>} spec.items  left to right
 * @param {Series[]} spec.series  the kinds, in the legend's order
 * @param {Array<{ value: number, label: string }>} spec.lines
 * @param {(value: number) => string} spec.format  a value as text
 * @param {[string, string]} spec.ends  the first item's and the last item's labels, under them
 */
export function valueBars({ label, items, series, lines, format, ends }) {
  const most = Math.max(Number.EPSILON, ...items.map((item) => item.value));
  const slots = Math.max(items.length, BARS);
  const step = WIDTH / slots;
  const y = (/** @type {number} */ value) => HEIGHT - (Math.min(value, most) / most) * HEIGHT;
  const bars = items.map((item, i) => svg("a", { href: item.href, tabindex: -1 },
    svg("rect", { class: `series-${item.kind}`, x: (i * step + step * 0.15).toFixed(2), y: y(item.value).toFixed(2), width: (step * 0.7).toFixed(2), height: (HEIGHT - y(item.value)).toFixed(2) },
      tip(item.title))));
  const shown = lines.filter((line) => line.value > 0);
  const across = shown.map((line) => svg("line", { class: "mark", x1: 0, x2: WIDTH, y1: y(line.value).toFixed(2), y2: y(line.value).toFixed(2) }));
  const tags = shown.map((line) => {
    const tag = h("span", { class: "line-tag" }, `${line.label} ${format(line.value)}`);
    tag.style.bottom = `${((Math.min(line.value, most) / most) * 100).toFixed(2)}%`;
    return tag;
  });
  const counted = series.map((s) => ({ ...s, count: items.filter((item) => item.kind === s.key).length })).filter((s) => s.count);
  const said = counted.map((s) => `${s.count} ${s.label}`).join(", ");
  const reach = items.length / slots;
  /** @type {Mark[]} */
  const marks = reach < 0.5 || items.length < 2
    ? [{ at: 0, label: items.length < 2 ? ends[1] : `${ends[0]} to ${ends[1]}` }]
    : [{ at: 0, label: ends[0] }, { at: reach >= 0.98 ? 1 : reach, label: ends[1] }];
  return h("figure", { class: "chart" },
    h("div", { class: "plot" }, h("span", { class: "y-max muted" }, `longest ${format(most)}`),
      // The bars link to their runs for the mouse; the drawing is read as one image.
      canvas(`${label}: ${items.length} runs${said ? `, ${said}` : ""}`, [svg("g", { "aria-hidden": "true" }, ...bars), ...across]), ...tags),
    axis(marks, true),
    h("figcaption", { class: "legend" },
      counted.map((s) => key(s.key, `${s.label} ${s.count}`)),
      shown.length ? h("span", { class: "key" }, h("span", { class: "swatch line", "aria-hidden": "true" }), " ", shown.map((line) => line.label).join(" and ")) : null));
}

/**
 * Lanes of ticks on one time line: a lane per thing (a task), a tick per instant (a fire).
 * @param {object} spec
 * @param {string} spec.label
 * @param {number} spec.from  epoch milliseconds at the left edge
 * @param {number} spec.until  at the right edge
 * @param {Array<{ name: Child, label: string, ticks: Array<{ at: number, title: string }>, note?: string }>} spec.lanes
 *   label: the lane's accessible name; note: shown after its name (how many ticks)
 * @param {Array<{ at: number, label: string, minor?: boolean }>} spec.marks  instants labelled on the axis, with a
 *   line across the lanes
 * @param {Child} spec.legend
 */
export function timeline({ label, from, until, lanes, marks, legend }) {
  const span = Math.max(1, until - from);
  const x = (/** @type {number} */ at) => ((at - from) / span) * WIDTH;
  const grid = marks.map((mark) => svg("line", { class: "grid", x1: x(mark.at).toFixed(2), x2: x(mark.at).toFixed(2), y1: 0, y2: HEIGHT }));
  const rows = lanes.map((lane) => h("div", { class: "lane", role: "listitem" },
    h("span", { class: "lane-name" }, lane.name, lane.note ? h("small", { class: "muted" }, ` ${lane.note}`) : null),
    canvas(lane.label, [...grid.map((line) => /** @type {SVGElement} */ (line.cloneNode())), ...lane.ticks.map((tick) =>
      svg("rect", { class: "tick", x: (x(tick.at) - 2).toFixed(2), y: 15, width: 4, height: 70 }, tip(tick.title)))])));
  const along = marks.map((mark) => ({ ...mark, at: (mark.at - from) / span })).filter((mark) => mark.at > 0.03 && mark.at < 0.97);
  return h("figure", { class: "chart timeline", "aria-label": label },
    h("div", { class: "lanes", role: "list" }, rows),
    h("div", { class: "lane axis-row" }, h("span", { class: "lane-name" }), axis(along)),
    h("figcaption", { class: "legend" }, legend));
}
