// The before/after viewer: the input stretched to the output's size under the output, a divider
// that reveals one or the other, zoom (buttons, wheel, keys) and pan (drag). Sizes are set in CSS
// pixels rather than with transforms so that `image-rendering: pixelated` shows true pixels.

const ZOOM_MIN = 0.02;
const ZOOM_MAX = 32;
const PIXELATED_FROM = 2; // display pixels per output pixel

export class Compare {
  constructor(root) {
    this.viewer = root.querySelector("#viewer");
    this.stage = root.querySelector("#stage");
    this.before = root.querySelector("#before");
    this.after = root.querySelector("#after");
    this.divider = root.querySelector("#divider");
    this.split = root.querySelector("#split");
    this.splitField = this.split.closest("label");
    this.empty = root.querySelector("#viewer-empty");
    this.tags = root.querySelectorAll(".viewer .tag");
    this.zoomButtons = root.querySelectorAll("button[data-zoom]");
    this.size = null; // output size {w, h}
    this.scale = 1;
    this.mode = "fit";
    this.x = 0;
    this.y = 0;
    this.fraction = 0.5;
    this.bind();
  }

  /** Shows a pair: `beforeUrl` may be empty (only the result is shown then). */
  async show(beforeUrl, afterUrl, width, height) {
    this.size = { w: width, h: height };
    const loads = [load(this.after, afterUrl)];
    if (beforeUrl) loads.push(load(this.before, beforeUrl).catch(() => null));
    this.before.hidden = !beforeUrl;
    await Promise.all(loads);
    if (!this.size.w) this.size = { w: this.after.naturalWidth, h: this.after.naturalHeight };
    this.stage.hidden = false;
    this.divider.hidden = !beforeUrl;
    this.tags.forEach((t) => (t.hidden = !beforeUrl));
    this.splitField.hidden = !beforeUrl;
    this.empty.hidden = true;
    this.viewer.classList.add("ready");
    this.zoom("fit");
  }

  clear() {
    this.size = null;
    this.stage.hidden = true;
    this.divider.hidden = true;
    this.tags.forEach((t) => (t.hidden = true));
    this.empty.hidden = false;
    this.splitField.hidden = true;
    this.viewer.classList.remove("ready");
    this.after.removeAttribute("src");
    this.before.removeAttribute("src");
  }

  /** "fit", or display pixels per output pixel, kept centred on (cx, cy) of the viewer. */
  zoom(level, cx, cy) {
    if (!this.size) return;
    const { width: vw, height: vh } = this.viewer.getBoundingClientRect();
    const old = this.scale;
    if (level === "fit") {
      this.mode = "fit";
      this.scale = Math.min(vw / this.size.w, vh / this.size.h);
      this.x = (vw - this.size.w * this.scale) / 2;
      this.y = (vh - this.size.h * this.scale) / 2;
    } else {
      this.mode = String(level);
      const next = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, Number(level)));
      const px = cx ?? vw / 2;
      const py = cy ?? vh / 2;
      this.x = px - ((px - this.x) * next) / old;
      this.y = py - ((py - this.y) * next) / old;
      this.scale = next;
    }
    this.zoomButtons.forEach((b) =>
      b.setAttribute("aria-pressed", String(b.dataset.zoom === this.mode)),
    );
    this.render();
  }

  render() {
    if (!this.size) return;
    const { width: vw, height: vh } = this.viewer.getBoundingClientRect();
    const w = this.size.w * this.scale;
    const h = this.size.h * this.scale;
    // Keep the image in view: centred when smaller than the viewer, else no gap at an edge.
    this.x = w <= vw ? (vw - w) / 2 : Math.min(0, Math.max(vw - w, this.x));
    this.y = h <= vh ? (vh - h) / 2 : Math.min(0, Math.max(vh - h, this.y));
    Object.assign(this.stage.style, {
      width: `${w}px`,
      height: `${h}px`,
      left: `${this.x}px`,
      top: `${this.y}px`,
    });
    this.stage.classList.toggle("pixelated", this.scale >= PIXELATED_FROM);
    const splitX = this.fraction * vw;
    const inside = Math.min(w, Math.max(0, splitX - this.x));
    this.after.style.clipPath = this.before.hidden ? "none" : `inset(0 0 0 ${inside}px)`;
    this.divider.style.left = `${splitX}px`;
    this.split.value = String(Math.round(this.fraction * 100));
  }

  setFraction(f) {
    this.fraction = Math.min(1, Math.max(0, f));
    this.render();
  }

  bind() {
    this.zoomButtons.forEach((b) => b.addEventListener("click", () => this.zoom(b.dataset.zoom)));
    this.split.addEventListener("input", () => this.setFraction(Number(this.split.value) / 100));

    let drag = null;
    this.viewer.addEventListener("pointerdown", (e) => {
      if (!this.size || e.button !== 0) return;
      const onDivider = this.divider.contains(e.target);
      drag = { id: e.pointerId, divider: onDivider, sx: e.clientX, sy: e.clientY, x: this.x, y: this.y };
      this.viewer.setPointerCapture(e.pointerId);
      this.viewer.classList.add("dragging");
      e.preventDefault();
    });
    this.viewer.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      const rect = this.viewer.getBoundingClientRect();
      if (drag.divider) {
        this.setFraction((e.clientX - rect.left) / rect.width);
      } else {
        this.mode = "pan";
        this.x = drag.x + e.clientX - drag.sx;
        this.y = drag.y + e.clientY - drag.sy;
        this.render();
      }
    });
    const end = (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      // A click without movement moves the divider there, like fal's own comparison slider.
      if (!drag.divider && Math.hypot(e.clientX - drag.sx, e.clientY - drag.sy) < 3) {
        const rect = this.viewer.getBoundingClientRect();
        this.setFraction((e.clientX - rect.left) / rect.width);
      }
      drag = null;
      this.viewer.classList.remove("dragging");
    };
    this.viewer.addEventListener("pointerup", end);
    this.viewer.addEventListener("pointercancel", end);
    this.viewer.addEventListener(
      "wheel",
      (e) => {
        if (!this.size) return;
        e.preventDefault();
        const rect = this.viewer.getBoundingClientRect();
        const factor = Math.exp(-e.deltaY * 0.0015);
        this.zoom(this.scale * factor, e.clientX - rect.left, e.clientY - rect.top);
      },
      { passive: false },
    );
    this.viewer.addEventListener("keydown", (e) => {
      if (!this.size) return;
      const step = 40;
      const keys = {
        "+": () => this.zoom(this.scale * 1.5),
        "=": () => this.zoom(this.scale * 1.5),
        "-": () => this.zoom(this.scale / 1.5),
        0: () => this.zoom("fit"),
        ArrowLeft: () => ((this.x += step), this.render()),
        ArrowRight: () => ((this.x -= step), this.render()),
        ArrowUp: () => ((this.y += step), this.render()),
        ArrowDown: () => ((this.y -= step), this.render()),
      };
      if (keys[e.key]) {
        keys[e.key]();
        e.preventDefault();
      }
    });
    new ResizeObserver(() => (this.mode === "fit" ? this.zoom("fit") : this.render())).observe(
      this.viewer,
    );
  }
}

function load(img, url) {
  return new Promise((resolve, reject) => {
    if (img.src === url && img.complete && img.naturalWidth) return resolve(img);
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url.slice(0, 80)}`));
    img.src = url;
  });
}
