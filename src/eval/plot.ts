/**
 * Pictures: line charts (ROC, PRO with its FPR limit, region overlap vs FPR,
 * training loss), heat maps of anomaly maps, and qualitative overlays like
 * Fig. 3 of the MVTec AD paper (ground truth outlined in red, detection
 * outlined in green, heat map beside the image).
 *
 * Rendering functions are pure and return an {@link RgbaImage}; `encodePng`
 * gives its bytes and `writePng` writes it atomically (both in
 * src/data/image.ts). Colours are `0xRRGGBBAA` numbers. Text uses the
 * built-in 5x7 font.
 *
 * @module
 */

import { createRgbaImage, type RgbaImage } from "../data/image.ts";
import { GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyphRows, textWidth } from "./font.ts";

const WHITE = 0xffffffff;
const BLACK = 0x000000ff;
const GRID_GRAY = 0xe0e0e0ff;
const RED = 0xff0000ff;
const GREEN = 0x00ff00ff;

/** Default colours of chart series, in order. */
export const SERIES_COLORS: readonly number[] = [
  0x1f77b4ff,
  0xd62728ff,
  0x2ca02cff,
  0xff7f0eff,
  0x9467bdff,
  0x8c564bff,
  0xe377c2ff,
  0x17becfff,
];

/** Writes one pixel (0-based coordinates) if inside the image; alpha is ignored (opaque). */
function setPixel(image: RgbaImage, x: number, y: number, color: number): void {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
  const at = (y * image.width + x) * 4;
  image.data[at] = (color >>> 24) & 0xff;
  image.data[at + 1] = (color >>> 16) & 0xff;
  image.data[at + 2] = (color >>> 8) & 0xff;
  image.data[at + 3] = 0xff;
}

function fillRect(
  image: RgbaImage,
  x: number,
  y: number,
  w: number,
  h: number,
  color: number,
): void {
  for (let yy = y; yy < y + h; yy++) {
    for (let xx = x; xx < x + w; xx++) setPixel(image, xx, yy, color);
  }
}

/**
 * Draws text with the built-in font; (x, y) is the top-left corner.
 * With `vertical`, the text runs bottom-to-top starting at (x, y) as its
 * bottom-left corner (for y-axis labels).
 */
function drawText(
  image: RgbaImage,
  text: string,
  x: number,
  y: number,
  color: number,
  scale = 1,
  vertical = false,
): void {
  [...text].forEach((char, index) => {
    const rows = glyphRows(char);
    for (let row = 0; row < GLYPH_HEIGHT; row++) {
      for (let column = 0; column < GLYPH_WIDTH; column++) {
        if (!(rows[row] & (1 << (GLYPH_WIDTH - 1 - column)))) continue;
        const along = (index * GLYPH_ADVANCE + column) * scale;
        const across = row * scale;
        for (let sy = 0; sy < scale; sy++) {
          for (let sx = 0; sx < scale; sx++) {
            if (vertical) setPixel(image, x + across + sy, y - along - sx, color);
            else setPixel(image, x + along + sx, y + across + sy, color);
          }
        }
      }
    }
  });
}

/** Bresenham line, `thickness` pixels wide (extra pixels below/right), clipped to `clip`. */
function drawLine(
  image: RgbaImage,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  color: number,
  thickness: number,
  clip: PlotArea,
): void {
  const dx = Math.abs(x1 - x0);
  const dy = -Math.abs(y1 - y0);
  const stepX = x0 < x1 ? 1 : -1;
  const stepY = y0 < y1 ? 1 : -1;
  let error = dx + dy;
  let x = x0;
  let y = y0;
  while (true) {
    for (let t = 0; t < thickness; t++) {
      for (let u = 0; u < thickness; u++) {
        const px = x + t;
        const py = y + u;
        if (px >= clip.left && px <= clip.right && py >= clip.top && py <= clip.bottom) {
          setPixel(image, px, py, color);
        }
      }
    }
    if (x === x1 && y === y1) break;
    const doubled = 2 * error;
    if (doubled >= dy) {
      error += dy;
      x += stepX;
    }
    if (doubled <= dx) {
      error += dx;
      y += stepY;
    }
  }
}

/** Pixel bounds (inclusive) of a chart's plotting area. */
interface PlotArea {
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/** "Nice" tick values (steps of 1, 2 or 5 times a power of ten) covering [min, max]. */
function niceTicks(min: number, max: number, targetCount = 5): number[] {
  const span = max - min;
  const rough = span / targetCount;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let tick = Math.ceil(min / step - 1e-9) * step; tick <= max + step * 1e-9; tick += step) {
    ticks.push(Math.abs(tick) < step * 1e-9 ? 0 : tick);
  }
  return ticks;
}

function formatTick(value: number, ticks: readonly number[]): string {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return value.toFixed(decimals);
}

/** One curve of a line chart. */
export interface ChartSeries {
  /** Legend entry. */
  name: string;
  /** x coordinates. */
  x: ArrayLike<number>;
  /** y coordinates, same length as `x`. */
  y: ArrayLike<number>;
  /** Colour `0xRRGGBBAA`; default from {@link SERIES_COLORS}. */
  color?: number;
}

/** A labelled vertical line, e.g. the FPR limit of AU-PRO. */
export interface VerticalMarker {
  /** x position in data units. */
  x: number;
  /** Label drawn next to the line. */
  label: string;
  /** Colour; default gray. */
  color?: number;
}

/** Options of {@link renderLineChart}. */
export interface LineChartOptions {
  /** Title above the plot. */
  title: string;
  /** x-axis label. */
  xLabel: string;
  /** y-axis label. */
  yLabel: string;
  /** Curves to draw. */
  series: readonly ChartSeries[];
  /** x-axis range; default [0, 1]. */
  xRange?: [number, number];
  /** y-axis range; default [0, 1]. */
  yRange?: [number, number];
  /** Image width in pixels; default 640. */
  width?: number;
  /** Image height in pixels; default 480. */
  height?: number;
  /** Vertical marker lines. */
  markers?: readonly VerticalMarker[];
  /** Draw the dashed diagonal y = x (chance level of a ROC curve). */
  diagonal?: boolean;
}

/**
 * Renders a line chart with axes, ticks, grid, title and legend.
 *
 * @param options chart content and size
 * @returns the chart image
 */
export function renderLineChart(options: LineChartOptions): RgbaImage {
  const width = options.width ?? 640;
  const height = options.height ?? 480;
  const [xMin, xMax] = options.xRange ?? [0, 1];
  const [yMin, yMax] = options.yRange ?? [0, 1];
  if (!(xMax > xMin) || !(yMax > yMin)) throw new RangeError("chart ranges must be increasing");
  const image = createRgbaImage(width, height, WHITE);
  const area: PlotArea = { left: 70, right: width - 20, top: 40, bottom: height - 55 };
  if (area.right - area.left < 20 || area.bottom - area.top < 20) {
    throw new RangeError(`chart size ${width}x${height} is too small`);
  }
  const toPixelX = (x: number) =>
    Math.round(area.left + (x - xMin) / (xMax - xMin) * (area.right - area.left));
  const toPixelY = (y: number) =>
    Math.round(area.bottom - (y - yMin) / (yMax - yMin) * (area.bottom - area.top));

  // Grid lines, ticks and tick labels.
  const xTicks = niceTicks(xMin, xMax);
  const yTicks = niceTicks(yMin, yMax);
  for (const tick of xTicks) {
    const px = toPixelX(tick);
    for (let py = area.top; py <= area.bottom; py++) setPixel(image, px, py, GRID_GRAY);
    fillRect(image, px, area.bottom, 1, 5, BLACK);
    const label = formatTick(tick, xTicks);
    drawText(image, label, px - Math.floor(textWidth(label) / 2), area.bottom + 8, BLACK);
  }
  for (const tick of yTicks) {
    const py = toPixelY(tick);
    for (let px = area.left; px <= area.right; px++) setPixel(image, px, py, GRID_GRAY);
    fillRect(image, area.left - 5, py, 5, 1, BLACK);
    const label = formatTick(tick, yTicks);
    drawText(image, label, area.left - 8 - textWidth(label), py - 3, BLACK);
  }

  if (options.diagonal) {
    const steps = area.right - area.left;
    for (let i = 0; i <= steps; i += 6) {
      const t = i / steps;
      const x = xMin + t * (xMax - xMin);
      drawLine(image, toPixelX(x), toPixelY(x), toPixelX(x), toPixelY(x), 0xa0a0a0ff, 2, area);
    }
  }

  for (const marker of options.markers ?? []) {
    const px = toPixelX(marker.x);
    const color = marker.color ?? 0x808080ff;
    for (let py = area.top; py <= area.bottom; py += 1) {
      if (py % 6 < 4) setPixel(image, px, py, color);
    }
    drawText(image, marker.label, px + 4, area.top + 4, color);
  }

  options.series.forEach((series, index) => {
    if (series.x.length !== series.y.length) {
      throw new RangeError(
        `series "${series.name}": ${series.x.length} x but ${series.y.length} y`,
      );
    }
    const color = series.color ?? SERIES_COLORS[index % SERIES_COLORS.length];
    let previous: [number, number] | null = null;
    for (let i = 0; i < series.x.length; i++) {
      const point: [number, number] = [toPixelX(series.x[i]), toPixelY(series.y[i])];
      // Millions of points map to few pixels; skip those adding nothing.
      if (previous && previous[0] === point[0] && previous[1] === point[1]) continue;
      if (previous) drawLine(image, previous[0], previous[1], point[0], point[1], color, 2, area);
      previous = point;
    }
    if (previous && series.x.length === 1) {
      drawLine(image, previous[0], previous[1], previous[0], previous[1], color, 3, area);
    }
  });

  // Frame on top of the curves.
  for (let px = area.left; px <= area.right; px++) {
    setPixel(image, px, area.top, BLACK);
    setPixel(image, px, area.bottom, BLACK);
  }
  for (let py = area.top; py <= area.bottom; py++) {
    setPixel(image, area.left, py, BLACK);
    setPixel(image, area.right, py, BLACK);
  }

  drawText(
    image,
    options.title,
    Math.floor((width - textWidth(options.title, 2)) / 2),
    12,
    BLACK,
    2,
  );
  const xLabelX = Math.floor((area.left + area.right - textWidth(options.xLabel)) / 2);
  drawText(image, options.xLabel, xLabelX, area.bottom + 28, BLACK);
  const yLabelY = Math.floor((area.top + area.bottom + textWidth(options.yLabel)) / 2);
  drawText(image, options.yLabel, 12, yLabelY, BLACK, 1, true);

  drawLegend(image, options.series, area);
  return image;
}

/** Legend box in the lower-right corner of the plot area. */
function drawLegend(image: RgbaImage, series: readonly ChartSeries[], area: PlotArea): void {
  if (series.length === 0) return;
  const lineHeight = 12;
  const boxWidth = 30 + Math.max(...series.map((s) => textWidth(s.name)));
  const boxHeight = series.length * lineHeight + 6;
  const left = area.right - boxWidth - 8;
  const top = area.bottom - boxHeight - 8;
  fillRect(image, left, top, boxWidth, boxHeight, WHITE);
  for (let x = left; x < left + boxWidth; x++) {
    setPixel(image, x, top, BLACK);
    setPixel(image, x, top + boxHeight - 1, BLACK);
  }
  for (let y = top; y < top + boxHeight; y++) {
    setPixel(image, left, y, BLACK);
    setPixel(image, left + boxWidth - 1, y, BLACK);
  }
  series.forEach((entry, index) => {
    const color = entry.color ?? SERIES_COLORS[index % SERIES_COLORS.length];
    const y = top + 4 + index * lineHeight;
    fillRect(image, left + 5, y + 3, 16, 2, color);
    drawText(image, entry.name, left + 25, y, BLACK);
  });
}

/** A named ROC curve. */
export interface NamedRocCurve {
  /** Legend entry. */
  name: string;
  /** False positive rates. */
  fpr: ArrayLike<number>;
  /** True positive rates. */
  tpr: ArrayLike<number>;
}

/**
 * ROC chart (TPR against FPR, chance diagonal).
 *
 * @param curves one or more curves, e.g. from `rocCurve`
 * @param title chart title
 * @returns the chart image (640x480)
 */
export function renderRocChart(
  curves: readonly NamedRocCurve[],
  title: string = "ROC",
): RgbaImage {
  return renderLineChart({
    title,
    xLabel: "false positive rate",
    yLabel: "true positive rate",
    series: curves.map((curve) => ({ name: curve.name, x: curve.fpr, y: curve.tpr })),
    diagonal: true,
  });
}

/** A named PRO (region overlap) curve. */
export interface NamedProCurve {
  /** Legend entry. */
  name: string;
  /** False positive rates. */
  fpr: ArrayLike<number>;
  /** Mean per-region overlap. */
  pro: ArrayLike<number>;
}

/**
 * PRO chart over the full FPR range with the AU-PRO integration limit marked.
 *
 * @param curves one or more curves, e.g. from `proCurve`
 * @param fprLimit the integration limit to mark (default 0.3)
 * @param title chart title
 * @returns the chart image (640x480)
 */
export function renderProChart(
  curves: readonly NamedProCurve[],
  fprLimit: number = 0.3,
  title: string = "PRO curve",
): RgbaImage {
  return renderLineChart({
    title,
    xLabel: "false positive rate",
    yLabel: "per-region overlap",
    series: curves.map((curve) => ({ name: curve.name, x: curve.fpr, y: curve.pro })),
    markers: [{ x: fprLimit, label: `FPR ${fprLimit}`, color: 0x808080ff }],
  });
}

/**
 * Region overlap against FPR, as in the MVTec AD paper's supplementary
 * figures (same data as a PRO curve, without the limit marker).
 *
 * @param curves one or more curves, e.g. from `regionOverlapCurve`
 * @param title chart title
 * @returns the chart image (640x480)
 */
export function renderRegionOverlapChart(
  curves: readonly NamedProCurve[],
  title: string = "Region overlap vs FPR",
): RgbaImage {
  return renderLineChart({
    title,
    xLabel: "false positive rate",
    yLabel: "region overlap",
    series: curves.map((curve) => ({ name: curve.name, x: curve.fpr, y: curve.pro })),
  });
}

/** (step, loss) pairs of one loss. */
export type LossPoints = readonly (readonly [number, number])[];

/**
 * Training loss against step: the `loss.png` of a run folder. The y axis starts at 0 (or at the
 * lowest loss when one is negative), so the drop reads in true proportion.
 *
 * @param losses `[step, loss]` pairs in step order, or several such series by name (a GAN's
 *   discriminator and generator losses), drawn on shared axes with a legend
 * @param title chart title, e.g. `"ae-ssim training loss"`
 * @returns the chart image (640x480)
 */
export function renderLossCurve(
  losses: LossPoints | Readonly<Record<string, LossPoints>>,
  title: string,
): RgbaImage {
  const named: [string, LossPoints][] = Array.isArray(losses)
    ? [["loss", losses as LossPoints]]
    : Object.entries(losses as Readonly<Record<string, LossPoints>>);
  const series = named.map(([name, points]) => ({
    name,
    x: points.map(([step]) => step),
    y: points.map(([, loss]) => loss),
  }));
  const allValues = series.flatMap((s) => s.y);
  const low = allValues.reduce((a, b) => Math.min(a, b), 0);
  const high = allValues.reduce((a, b) => Math.max(a, b), low);
  const lastStep = series.reduce((last, s) => Math.max(last, s.x.at(-1) ?? 0), 0);
  return renderLineChart({
    title,
    xLabel: "step",
    yLabel: "loss",
    series,
    xRange: [0, Math.max(1, lastStep)],
    // A little headroom above the highest loss keeps its peak off the frame.
    yRange: [low, high > low ? high + 0.05 * (high - low) : low + 1],
  });
}

/** Available colour maps. */
export type ColormapName = "jet" | "inferno";

const INFERNO_ANCHORS: readonly (readonly [number, number, number])[] = [
  [0, 0, 4],
  [31, 12, 72],
  [85, 15, 109],
  [136, 34, 106],
  [186, 54, 85],
  [227, 89, 51],
  [249, 140, 10],
  [249, 201, 50],
  [252, 255, 164],
];

/**
 * Colour of a value in [0, 1] (clamped; NaN shows as black) in a colour map.
 *
 * @param value position in the colour map
 * @param colormap `"jet"` (blue to red) or `"inferno"` (black to yellow)
 * @returns `0xRRGGBBAA`
 */
export function colormapColor(value: number, colormap: ColormapName = "jet"): number {
  if (Number.isNaN(value)) return BLACK;
  const t = Math.min(1, Math.max(0, value));
  let r: number, g: number, b: number;
  if (colormap === "jet") {
    const channel = (center: number) =>
      Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - center))));
    [r, g, b] = [channel(3), channel(2), channel(1)];
  } else {
    const position = t * (INFERNO_ANCHORS.length - 1);
    const index = Math.min(Math.floor(position), INFERNO_ANCHORS.length - 2);
    const fraction = position - index;
    const [from, to] = [INFERNO_ANCHORS[index], INFERNO_ANCHORS[index + 1]];
    [r, g, b] = [0, 1, 2].map((c) => Math.round(from[c] + (to[c] - from[c]) * fraction));
  }
  return ((r << 24) | (g << 16) | (b << 8) | 0xff) >>> 0;
}

/** Options of {@link renderHeatmap}. */
export interface HeatmapOptions {
  /** Value shown as the colour map's start; default: the map minimum. */
  min?: number;
  /** Value shown as the colour map's end; default: the map maximum. */
  max?: number;
  /** Colour map; default `"jet"`. */
  colormap?: ColormapName;
}

function mapRange(map: Float32Array, options: HeatmapOptions): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < map.length; i++) {
    if (map[i] < min) min = map[i];
    if (map[i] > max) max = map[i];
  }
  return [options.min ?? min, options.max ?? max];
}

function checkSize(what: string, length: number, width: number, height: number, channels = 1) {
  if (length !== width * height * channels) {
    throw new RangeError(`${what} has ${length} values, expected ${width}x${height}x${channels}`);
  }
}

/**
 * Renders an anomaly map as a colour image (one image pixel per map value).
 *
 * @param map row-major map of `width * height` values
 * @param width map width
 * @param height map height
 * @param options value range and colour map
 * @returns the heat-map image
 */
export function renderHeatmap(
  map: Float32Array,
  width: number,
  height: number,
  options: HeatmapOptions = {},
): RgbaImage {
  checkSize("map", map.length, width, height);
  const [min, max] = mapRange(map, options);
  const span = max > min ? max - min : 1;
  const image = createRgbaImage(width, height, BLACK);
  for (let i = 0; i < map.length; i++) {
    setPixel(
      image,
      i % width,
      Math.floor(i / width),
      colormapColor((map[i] - min) / span, options.colormap),
    );
  }
  return image;
}

/** Input of {@link renderQualitative}. */
export interface QualitativeInput {
  /**
   * The test image, values in [0, 1], row-major with interleaved channels
   * (HWC): `width * height * channels` values.
   */
  image: Float32Array;
  /** 1 for gray, 3 for RGB. */
  channels: 1 | 3;
  /** Width of image, mask and map. */
  width: number;
  /** Height of image, mask and map. */
  height: number;
  /** Ground-truth mask (non-zero = defect) or null. */
  gtMask: Uint8Array | null;
  /** Anomaly map at the image's resolution. */
  map: Float32Array;
  /** Detection is `map > threshold`. */
  threshold: number;
  /** Outline thickness in pixels; default scales with the image (1 per 256 px). */
  outlineWidth?: number;
  /** Heat-map options for the right panel. */
  heatmap?: HeatmapOptions;
}

/**
 * Marks the outline of a binary region: pixels inside the region within
 * `thickness` pixels (Chebyshev distance) of a pixel outside it or of the
 * image border.
 */
function outline(
  inside: (pixel: number) => boolean,
  width: number,
  height: number,
  thickness: number,
): Uint8Array {
  const result = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!inside(y * width + x)) continue;
      search: for (let dy = -thickness; dy <= thickness; dy++) {
        for (let dx = -thickness; dx <= thickness; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height || !inside(ny * width + nx)) {
            result[y * width + x] = 1;
            break search;
          }
        }
      }
    }
  }
  return result;
}

/**
 * Qualitative result like the MVTec AD paper's Fig. 3: left, the image with
 * the ground truth outlined in red and the detection (`map > threshold`)
 * outlined in green (yellow where both overlap); right, the anomaly map as a
 * heat map; 4 white pixels between them.
 *
 * @param input image, mask, map and threshold
 * @returns an image of size `(2 * width + 4) x height`
 */
export function renderQualitative(input: QualitativeInput): RgbaImage {
  const { image, channels, width, height, gtMask, map, threshold } = input;
  checkSize("image", image.length, width, height, channels);
  checkSize("map", map.length, width, height);
  if (gtMask !== null) checkSize("ground-truth mask", gtMask.length, width, height);
  const gap = 4;
  const result = createRgbaImage(2 * width + gap, height, WHITE);
  for (let i = 0; i < width * height; i++) {
    const gray = (c: number) =>
      Math.round(255 * Math.min(1, Math.max(0, image[i * channels + c] || 0)));
    const [r, g, b] = channels === 3 ? [gray(0), gray(1), gray(2)] : [gray(0), gray(0), gray(0)];
    setPixel(
      result,
      i % width,
      Math.floor(i / width),
      ((r << 24) | (g << 16) | (b << 8) | 0xff) >>> 0,
    );
  }
  // A pixel is on the outline when an outside pixel lies within `thickness` of it.
  const thickness = Math.max(
    1,
    Math.round(input.outlineWidth ?? Math.min(width, height) / 256),
  );
  const truthOutline = gtMask === null
    ? new Uint8Array(width * height)
    : outline((pixel) => gtMask[pixel] !== 0, width, height, thickness);
  const detectionOutline = outline((pixel) => map[pixel] > threshold, width, height, thickness);
  for (let i = 0; i < width * height; i++) {
    const color = truthOutline[i] && detectionOutline[i]
      ? 0xffff00ff
      : truthOutline[i]
      ? RED
      : detectionOutline[i]
      ? GREEN
      : null;
    if (color !== null) setPixel(result, i % width, Math.floor(i / width), color);
  }
  const heat = renderHeatmap(map, width, height, input.heatmap);
  for (let y = 0; y < height; y++) {
    const source = heat.data.subarray(y * width * 4, (y + 1) * width * 4);
    result.data.set(source, (y * result.width + width + gap) * 4);
  }
  return result;
}
