// dom.ts: the only way the dashboard builds DOM nodes. `h` and `svg` create elements; string
// and number children always become text nodes (never parsed as HTML), so member names, session
// names and state documents, which are hostile input, can never inject markup.

/** An attribute value: `false`, `null` and `undefined` leave the attribute out; `true` sets it empty. */
export type AttrValue = string | number | boolean | null | undefined;

/** Attributes of `h`/`svg`: plain attributes, and `on<event>` listeners. */
export type Attrs = Record<string, AttrValue | EventListener>;

/** A child: a node, a string (becomes a text node), a number, or nothing (skipped). */
export type Child = Node | string | number | null | undefined | false | Child[];

function apply(el: Element, attrs: Attrs | null | undefined, children: Child[]): void {
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (typeof value === "function") {
        el.addEventListener(key.slice(2).toLowerCase(), value);
      } else if (/^on/i.test(key)) {
        // An inline handler would be code from a string: never (the CSP refuses them anyway).
        throw new Error(`h(): attribute ${key} must be a function`);
      } else if (value === true) {
        el.setAttribute(key, "");
      } else if (value !== false && value !== null && value !== undefined) {
        el.setAttribute(key, String(value));
      }
    }
  }
  append(el, children);
}

/** Appends children to a node: strings and numbers as text nodes, arrays flattened. */
export function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (typeof child === "string" || typeof child === "number") {
      parent.appendChild(document.createTextNode(String(child)));
    } else parent.appendChild(child);
  }
}

/** Creates an HTML element with attributes and children (strings become text, never HTML). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  apply(el, attrs, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Creates an SVG element (same rules as `h`). */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs, children);
  return el;
}

/** Replaces all children of `parent` with `children`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, children);
}

/** Sets an element's text (textContent) only when it changed, so selections and layout stay calm. */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}
