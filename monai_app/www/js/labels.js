// The label layer: a {0,1} mask at the image's size, drawn tinted on its own canvas, with brush strokes
// and an undo stack of snapshots (mask + clicks), kept apart from the image layer and the tool state.

const UNDO_BYTES = 96 * 1024 * 1024; // snapshots kept: as many as fit, at least 5
const TINT = [255, 64, 32]; // fracture colour
// RGBA packed as the platform's byte order stores it in a Uint32Array over ImageData bytes.
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const pack = (r, g, b, a) => (LITTLE_ENDIAN ? ((a << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | a) >>> 0);
const ON = pack(TINT[0], TINT[1], TINT[2], 255);
const OFF = pack(TINT[0], TINT[1], TINT[2], 0);

export class LabelLayer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.width = 0;
    this.height = 0;
    this.mask = new Uint8Array(0);
    this.undoStack = [];
    this.redoStack = [];
  }

  reset(width, height) {
    this.width = width;
    this.height = height;
    this.canvas.width = width;
    this.canvas.height = height;
    this.mask = new Uint8Array(width * height);
    this.pixels = this.ctx.createImageData(width, height);
    this.undoStack = [];
    this.redoStack = [];
    this.render();
  }

  get maxSnapshots() {
    return Math.max(5, Math.floor(UNDO_BYTES / Math.max(1, this.mask.length)));
  }

  /** Remember the current mask and clicks, before an edit. */
  snapshot(clicks) {
    this.undoStack.push({ mask: this.mask.slice(), clicks: clicks.map((c) => ({ ...c })) });
    if (this.undoStack.length > this.maxSnapshots) this.undoStack.shift();
    this.redoStack = [];
  }

  /** Step back; returns the clicks of the restored state, or null when there is nothing to undo. */
  undo(clicks) {
    const previous = this.undoStack.pop();
    if (!previous) return null;
    this.redoStack.push({ mask: this.mask, clicks: clicks.map((c) => ({ ...c })) });
    this.mask = previous.mask;
    this.render();
    return previous.clicks;
  }

  redo(clicks) {
    const next = this.redoStack.pop();
    if (!next) return null;
    this.undoStack.push({ mask: this.mask, clicks: clicks.map((c) => ({ ...c })) });
    this.mask = next.mask;
    this.render();
    return next.clicks;
  }

  setMask(mask) {
    this.mask = mask;
    this.render();
  }

  count() {
    let n = 0;
    for (let i = 0; i < this.mask.length; i++) n += this.mask[i];
    return n;
  }

  /** Paint (value 1) or erase (value 0) a disc of ``radius`` image pixels along the segment a -> b. */
  stroke(a, b, radius, value) {
    const steps = Math.max(1, Math.ceil(Math.hypot(b.x - a.x, b.y - a.y) / Math.max(1, radius / 2)));
    const r2 = radius * radius;
    let x0 = this.width, y0 = this.height, x1 = -1, y1 = -1;
    for (let s = 0; s <= steps; s++) {
      const cx = a.x + ((b.x - a.x) * s) / steps;
      const cy = a.y + ((b.y - a.y) * s) / steps;
      const left = Math.max(0, Math.floor(cx - radius)), right = Math.min(this.width - 1, Math.ceil(cx + radius));
      const top = Math.max(0, Math.floor(cy - radius)), bottom = Math.min(this.height - 1, Math.ceil(cy + radius));
      for (let y = top; y <= bottom; y++) {
        for (let x = left; x <= right; x++) {
          const dx = x + 0.5 - cx, dy = y + 0.5 - cy; // pixel centres
          if (dx * dx + dy * dy <= r2) this.mask[y * this.width + x] = value;
        }
      }
      x0 = Math.min(x0, left); y0 = Math.min(y0, top); x1 = Math.max(x1, right); y1 = Math.max(y1, bottom);
    }
    if (x1 >= x0 && y1 >= y0) this.render(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }

  /** Redraw the tinted mask (all of it, or the rectangle that changed). */
  render(x = 0, y = 0, w = this.width, h = this.height) {
    if (!this.width) return;
    const words = new Uint32Array(this.pixels.data.buffer); // one RGBA pixel per write
    for (let row = y; row < y + h; row++) {
      for (let p = row * this.width + x, end = p + w; p < end; p++) words[p] = this.mask[p] ? ON : OFF;
    }
    this.ctx.putImageData(this.pixels, 0, 0, x, y, w, h);
  }
}
