// @ts-check
// The rows of a table redrawn live, kept by key (a task id, a run id): a refresh updates a row in
// place, so that focus, an open form or a half-typed value in it survive, instead of building it anew.

/**
 * A row as its builder made it, and how to bring it up to date.
 * @template T
 * @typedef {object} Keyed
 * @property {HTMLTableRowElement} row
 * @property {(item: T) => void} update  called on the new row at once, then on every redraw
 */

/**
 * @template T
 * @param {HTMLTableSectionElement} tbody
 * @param {(item: T) => string} key
 * @param {(item: T) => Keyed<T>} build
 */
export function keyedRows(tbody, key, build) {
  /** @type {Map<string, Keyed<T>>} */
  const drawn = new Map();
  /** @type {WeakSet<Element>} */
  const owned = new WeakSet();

  // A row the helper did not make (a form opened under a task) belongs to the keyed row above it:
  // it moves with it and goes with it.
  /** @param {Element} row */
  function group(row) {
    const rows = [row];
    for (let el = row.nextElementSibling; el && !owned.has(el); el = el.nextElementSibling) rows.push(el);
    return rows;
  }

  return {
    /** Whether the row of this key is on the page. @param {string} id */
    has(id) {
      return drawn.has(id);
    },
    /** Makes the table show these items, in this order. @param {readonly T[]} items */
    draw(items) {
      const wanted = new Set(items.map(key));
      for (const [id, entry] of drawn) {
        if (wanted.has(id)) continue;
        for (const el of group(entry.row)) el.remove();
        drawn.delete(id);
      }
      let next = tbody.firstElementChild;
      for (const item of items) {
        const id = key(item);
        let entry = drawn.get(id);
        if (!entry) {
          entry = build(item);
          drawn.set(id, entry);
          owned.add(entry.row);
        }
        entry.update(item);
        const rows = group(entry.row);
        if (entry.row === next) next = rows[rows.length - 1].nextElementSibling;
        else for (const el of rows) tbody.insertBefore(el, next);
      }
    },
  };
}
