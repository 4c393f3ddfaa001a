/** The run writer: a detector that maps many images at once gets them in chunks, each map whole. */

import assert from "node:assert/strict";
import type { FloatImage } from "../../src/data/image.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { mapPath } from "../../src/eval/evaluate.ts";
import { readTiffFile } from "../../src/eval/tiff.ts";
import type { AnomalyDetector } from "../../src/methods/method.ts";
import { writeRunOutputs } from "../../src/methods/runner.ts";
import { tinyDataset } from "../data/helpers.ts";

Deno.test("writeRunOutputs passes images in chunks to anomalyMaps and writes each image's map", async () => {
  const { root, cleanup } = await tinyDataset();
  const runDir = await Deno.makeTempDir({ prefix: "anodet-runner-" });
  try {
    const category = await openCategory(root, "carpet", { onWarning: () => {} });
    const chunks: number[] = [];
    // Each map holds its image's mean, so a map written for the wrong image would show.
    const mean = (image: FloatImage) =>
      image.data.reduce((sum, v) => sum + v, 0) / image.data.length;
    const detector: AnomalyDetector = {
      method: "batched",
      channels: 1,
      anomalyMap: () => Promise.reject(new Error("anomalyMap must not be called")),
      anomalyMaps: (images) => {
        chunks.push(images.length);
        return Promise.resolve(
          images.map((image) => new Float32Array(image.width * image.height).fill(mean(image))),
        );
      },
      save: () => Promise.resolve(),
      dispose: () => {},
    };
    await writeRunOutputs({ detector, category, runDir });
    const total = category.validation.length + category.test.length;
    assert.equal(chunks.reduce((sum, n) => sum + n, 0), total);
    assert.ok(chunks.length < total, `images went in chunks: ${chunks}`);
    for (const sample of category.test) {
      const map = await readTiffFile(mapPath(`${runDir}/maps`, category.name, sample));
      const image = await category.loadImage(sample, { channels: 1 });
      assert.deepEqual([map.width, map.height], [image.width, image.height]);
      assert.ok(Math.abs(map.map[0] - mean(image)) < 1e-6, `${sample.imagePath}: its own map`);
    }
  } finally {
    await Deno.remove(runDir, { recursive: true });
    await cleanup();
  }
});
