import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeRgba, encodePng, type RgbaImage, writePng } from "../../src/data/image.ts";
import {
  colormapColor,
  renderHeatmap,
  renderLineChart,
  renderLossCurve,
  renderProChart,
  renderQualitative,
  renderRegionOverlapChart,
  renderRocChart,
} from "../../src/eval/plot.ts";
import { glyphRows, textWidth } from "../../src/eval/font.ts";

/** Encodes a rendered picture and decodes it back, so that the PNG itself is checked. */
function roundTrip(picture: RgbaImage): Promise<RgbaImage> {
  return decodeRgba(encodePng(picture), "picture.png");
}

/** RGBA of a 0-based pixel as 0xRRGGBBAA. */
function pixel(image: RgbaImage, x: number, y: number): number {
  const at = (y * image.width + x) * 4;
  const [r, g, b, a] = image.data.subarray(at, at + 4);
  return ((r << 24) | (g << 16) | (b << 8) | a) >>> 0;
}

Deno.test("colormapColor: jet runs from dark blue to dark red, inferno from black to pale yellow", () => {
  // jet channel = clamp(1.5 - |4t - c|) with c = 3, 2, 1 for r, g, b: t=0 -> (0, 0, 0.5).
  assert.equal(colormapColor(0, "jet"), 0x000080ff);
  assert.equal(colormapColor(1, "jet"), 0x800000ff);
  assert.equal(colormapColor(0.5, "jet"), 0x80ff80ff);
  assert.equal(colormapColor(-3, "jet"), colormapColor(0, "jet"));
  assert.equal(colormapColor(0, "inferno"), 0x000004ff);
  assert.equal(colormapColor(1, "inferno"), 0xfcffa4ff);
});

Deno.test("font: glyphs are 7 rows of 5 bits, unknown characters draw as '?'", () => {
  assert.deepEqual(glyphRows("1"), [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]);
  assert.deepEqual(glyphRows("a"), glyphRows("A"));
  assert.deepEqual(glyphRows("§"), glyphRows("?"));
  assert.equal(textWidth("AB", 2), 22); // (2*6 - 1) * 2
});

Deno.test("line charts decode as PNGs of the requested size with axes and title", async () => {
  const chart = renderLineChart({
    title: "ROC",
    xLabel: "FPR",
    yLabel: "TPR",
    series: [{ name: "a", x: [0, 0.5, 1], y: [0, 0.9, 1], color: 0xff0000ff }],
    width: 320,
    height: 240,
  });
  const image = await roundTrip(chart);
  assert.equal(image.width, 320);
  assert.equal(image.height, 240);
  // Plot frame: left edge x=70 and bottom edge y=240-55 are black.
  assert.equal(pixel(image, 70, 100), 0x000000ff);
  assert.equal(pixel(image, 150, 185), 0x000000ff);
  // The curve passes through data (0.5, 0.9): x = 70 + 0.5*230 = 185, y = 185 - 0.9*145 = 54.5.
  const curveHit = [53, 54, 55, 56].some((y) => pixel(image, 185, y) === 0xff0000ff);
  assert.ok(curveHit, "curve pixel near (185, 55)");
  // The title is drawn in black in the top band.
  let titlePixels = 0;
  for (let y = 12; y < 26; y++) {
    for (let x = 0; x < 320; x++) if (pixel(image, x, y) === 0x000000ff) titlePixels++;
  }
  assert.ok(titlePixels > 20);
});

Deno.test("ROC, PRO and region-overlap charts render as 640x480 PNGs", async () => {
  const curve = {
    name: "method",
    fpr: [0, 0.1, 0.4, 1],
    tpr: [0, 0.6, 0.9, 1],
    pro: [0, 0.5, 0.8, 1],
  };
  for (
    const chart of [
      renderRocChart([curve]),
      renderProChart([curve]),
      renderRegionOverlapChart([curve]),
    ]
  ) {
    const image = await roundTrip(chart);
    assert.equal(image.width, 640);
    assert.equal(image.height, 480);
  }
  // The PRO chart marks FPR 0.3 with a gray dashed line at x = 70 + 0.3 * 550 = 235.
  const pro = renderProChart([curve]);
  const grayPixels = Array.from({ length: 380 }, (_, i) => pixel(pro, 235, 45 + i)).filter((c) =>
    c === 0x808080ff
  );
  assert.ok(grayPixels.length > 100);
});

Deno.test("heat map colours each map value", async () => {
  const heat = renderHeatmap(Float32Array.from([0, 1, 2, 3, 4, 5]), 3, 2);
  const image = await roundTrip(heat);
  assert.equal(image.width, 3);
  assert.equal(image.height, 2);
  assert.equal(pixel(image, 0, 0), colormapColor(0));
  assert.equal(pixel(image, 2, 1), colormapColor(1));
  assert.equal(pixel(image, 1, 1), colormapColor(4 / 5));
});

Deno.test("qualitative overlay outlines ground truth in red and detection in green", async () => {
  // 6x6 gray image; ground truth = 2x2 block at (1..2, 1..2); detection = map > 0.5 at (4..5, 3..5).
  const width = 6;
  const height = 6;
  const mask = new Uint8Array(36);
  const map = new Float32Array(36);
  for (const [x, y] of [[1, 1], [2, 1], [1, 2], [2, 2]]) mask[y * width + x] = 1;
  for (let y = 3; y < 6; y++) for (let x = 4; x < 6; x++) map[y * width + x] = 1;
  const result = renderQualitative({
    image: new Float32Array(36).fill(0.5),
    channels: 1,
    width,
    height,
    gtMask: mask,
    map,
    threshold: 0.5,
  });
  const image = await roundTrip(result);
  assert.equal(image.width, 2 * width + 4);
  assert.equal(image.height, height);
  assert.equal(pixel(image, 1, 1), 0xff0000ff); // every pixel of a 2x2 block is on its outline
  assert.equal(pixel(image, 4, 4), 0x00ff00ff); // detection block touches the border: outline
  assert.equal(pixel(image, 0, 0), 0x808080ff); // untouched gray 0.5 -> 128
  assert.equal(pixel(image, 7, 0), 0xffffffff); // white gap
  assert.equal(pixel(image, 10 + 4, 4), colormapColor(1)); // heat map panel
  assert.equal(pixel(image, 10, 0), colormapColor(0));
  assert.throws(
    () =>
      renderQualitative({
        image: new Float32Array(3),
        channels: 3,
        width,
        height,
        gtMask: null,
        map,
        threshold: 0,
      }),
    /image has 3 values/,
  );
});

Deno.test("writePng writes a picture as a decodable file atomically", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const path = join(directory, "plots", "heat.png");
    await writePng(path, renderHeatmap(new Float32Array(4), 2, 2));
    const image = await decodeRgba(await Deno.readFile(path), path);
    assert.equal(image.width, 2);
    assert.deepEqual([...Deno.readDirSync(join(directory, "plots"))].map((e) => e.name), [
      "heat.png",
    ]);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("loss curve: steps on x from 0, losses on y from 0 with headroom", () => {
  const chart = renderLossCurve([[0, 2], [50, 1], [100, 0.5]], "ae training loss");
  assert.equal(chart.width, 640);
  assert.equal(chart.height, 480);
  // Plot area x 70..620 for steps 0..100, y 425..40 for losses 0..2.1 (2 plus 5 %).
  // The first point (0, 2) lies at x = 70, y = 425 - 2 / 2.1 * 385 = 58.3.
  const firstSeries = [57, 58, 59, 60].some((y) => pixel(chart, 71, y) === 0x1f77b4ff);
  assert.ok(firstSeries, "curve starts near (71, 58) in the first series colour");
  // Without losses the chart is still drawn (empty axes), not an error.
  assert.equal(renderLossCurve([], "empty").width, 640);
});

Deno.test("loss curve: named series share the axes, each in its own colour", () => {
  const chart = renderLossCurve(
    { discriminator: [[0, 2], [100, 0.5]], generator: [[0, 0.5], [200, 4]] },
    "anogan training loss",
  );
  const colours = new Set<number>();
  for (let y = 0; y < chart.height; y++) {
    for (let x = 0; x < chart.width; x++) colours.add(pixel(chart, x, y));
  }
  assert.ok(colours.has(0x1f77b4ff), "the first series (discriminator) in the first colour");
  assert.ok(colours.has(0xd62728ff), "the second series (generator) in the second colour");
  // x runs to the last step of either series (200) and y to the highest loss of either (4 + 5 %):
  // the generator's last point (200, 4) lies at x = 620, y = 425 − 4 / 4.2 · 385 = 58.3.
  const lastPoint = [57, 58, 59, 60].some((y) => pixel(chart, 619, y) === 0xd62728ff);
  assert.ok(lastPoint, "the generator's curve ends near (619, 58)");
  // A single series given by name is the same chart as the bare list.
  const bare = renderLossCurve([[0, 2], [50, 1]], "t");
  const named = renderLossCurve({ loss: [[0, 2], [50, 1]] }, "t");
  assert.deepEqual(named.data, bare.data);
});
