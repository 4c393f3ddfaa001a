/**
 * How sharp must an autoencoder's reconstruction be for its anomaly map to find the defects?
 * (a script, not a test):
 *
 *   deno run -A bench/reconstruction_headroom.ts [--categories carpet,leather,bottle]
 *     [--sizes 256,512] [--sigmas 0,0.5,1,2,4]
 *
 * The synthetic fixtures know each test image's intact scene, the image before its defect was
 * painted. That scene is the reconstruction of a perfect autoencoder. This script blurs it by a
 * Gaussian of σ pixels (at the network's working size) to stand for a less perfect one, and
 * reports the pixel ROC AUC of the ae-ssim map (1 − SSIM) and of the ae-l2 map (squared
 * residual) over every test image of the category, at the working size the methods use: the
 * zoomed texture, or the whole object. σ = 0 is the best any reconstruction method can do; where
 * the SSIM column falls to chance at σ = 1, only a reconstruction sharp to the pixel can score.
 */

import { parseArgs } from "node:util";
import { init, noGrad, tensor, tidy, toArrays } from "../src/tensor/tensor.ts";
import * as op from "../src/tensor/ops.ts";
import { type FloatImage, resize, toGrayscale } from "../src/data/image.ts";
import { rocAuc } from "../src/eval/metrics.ts";
import { fixtureDefectTypes, renderSample } from "../fixtures/mod.ts";
import { CATEGORY_INFO } from "../src/data/mvtec.ts";

const numbers = (text: string, flag: string): number[] =>
  text.split(",").map((part) => {
    const value = Number(part);
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(
        `--${flag}: expected non-negative numbers separated by commas, got "${text}"`,
      );
    }
    return value;
  });

const { values } = parseArgs({
  args: Deno.args,
  options: {
    categories: { type: "string", default: "carpet,leather,bottle" },
    sizes: { type: "string", default: "256,512" },
    sigmas: { type: "string", default: "0,0.5,1,2,4" },
  },
});
const sizes = numbers(values.sizes!, "sizes");
const sigmas = numbers(values.sigmas!, "sigmas");

/** The test split of a synthetic category as the fixtures generate it (8 good, 24+ defective). */
function testSamples(category: string) {
  const defects = fixtureDefectTypes(category);
  const perDefect = Math.ceil(24 / defects.length);
  return [
    ...Array.from({ length: 8 }, (_, i) => renderSample(category, 0, "test", "good", i)),
    ...defects.flatMap((defect) =>
      Array.from({ length: perDefect }, (_, i) => renderSample(category, 0, "test", defect, i))
    ),
  ];
}

/** The two anomaly maps at `size`, brought back to the image's own size. */
async function maps(
  image: FloatImage,
  reconstruction: FloatImage,
  size: number,
  sigma: number,
): Promise<{ ssim: Float32Array; l2: Float32Array }> {
  const shape = [1, 1, size, size];
  const input = tensor(resize(image, size, size).data, shape);
  const target = tensor(resize(reconstruction, size, size).data, shape);
  const [ssimMap, l2Map] = noGrad(() =>
    tidy(() => {
      const blurred = sigma > 0
        ? op.gaussianBlur(target, sigma, undefined, { normalizeBorder: true })
        : target;
      return [op.affine(op.ssim(blurred, input).map, -1, 1), op.square(op.sub(blurred, input))];
    })
  );
  const [ssim, l2] = await toArrays([ssimMap, l2Map]);
  for (const t of [input, target, ssimMap, l2Map]) t.dispose();
  const back = (map: Float32Array) =>
    resize({ width: size, height: size, channels: 1, data: map }, image.width, image.height).data;
  return { ssim: back(ssim), l2: back(l2) };
}

await init();
console.log("| category | working size | σ (px) | pixel ROC AUC, 1 − SSIM | pixel ROC AUC, L2 |");
console.log("|---|---|---|---|---|");
for (const category of values.categories!.split(",")) {
  const samples = testSamples(category).map((sample) => ({
    image: toGrayscale(sample.image),
    intact: toGrayscale(sample.intact),
    mask: sample.mask,
  }));
  const pixels = samples.reduce((n, s) => n + s.image.data.length, 0);
  const labels = new Uint8Array(pixels);
  let offset = 0;
  for (const { image, mask } of samples) {
    if (mask) labels.set(Uint8Array.from(mask.data, (v) => (v > 0.5 ? 1 : 0)), offset);
    offset += image.data.length;
  }
  // Objects go through the network whole at 256; textures are zoomed.
  const workingSizes = CATEGORY_INFO[category]?.kind === "object" ? [256] : sizes;
  for (const size of workingSizes) {
    for (const sigma of sigmas) {
      const ssimScores = new Float32Array(pixels);
      const l2Scores = new Float32Array(pixels);
      let at = 0;
      for (const { image, intact } of samples) {
        const { ssim, l2 } = await maps(image, intact, size, sigma);
        ssimScores.set(ssim, at);
        l2Scores.set(l2, at);
        at += ssim.length;
      }
      const ssimAuc = rocAuc(ssimScores, labels).toFixed(3);
      const l2Auc = rocAuc(l2Scores, labels).toFixed(3);
      console.log(`| ${category} | ${size} | ${sigma} | ${ssimAuc} | ${l2Auc} |`);
    }
  }
}
