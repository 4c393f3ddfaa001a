import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import { openCategory } from "../../src/data/mvtec.ts";

// The real MVTec AD data lives beside the repository (../shared), not in it.
const ROOT = fileURLToPath(new URL("../../../shared/data/mvtec_ad", import.meta.url));
const present = existsSync(`${ROOT}/bottle`);

Deno.test({
  name: present
    ? "real MVTec AD bottle: counts, defect types, every defective image paired with its mask"
    : `real MVTec AD bottle: SKIPPED, ${ROOT}/bottle is absent`,
  ignore: !present,
  fn: async () => {
    const bottle = await openCategory(ROOT, "bottle", { validationFraction: 0.1, seed: 0 });
    assert.equal(bottle.train.length + bottle.validation.length, 209);
    assert.equal(bottle.validation.length, 21);
    assert.equal(bottle.test.length, 83);
    const count = (defect: string) => bottle.test.filter((s) => s.defect === defect).length;
    assert.deepEqual(bottle.defectTypes, ["broken_large", "broken_small", "contamination"]);
    assert.deepEqual(
      [count("good"), count("broken_large"), count("broken_small"), count("contamination")],
      [20, 20, 22, 21],
    );
    assert.equal(bottle.width, 900);
    assert.equal(bottle.height, 900);
    assert.equal(bottle.storedChannels, 3);
    // open() already checked every mask header against its image; confirm the pairing here.
    for (const sample of bottle.test) {
      assert.equal(sample.width, 900);
      if (sample.anomalous) {
        assert.equal(
          sample.maskPath,
          sample.imagePath.replace("/test/", "/ground_truth/").replace(
            /\.png$/,
            "_mask.png",
          ),
        );
      } else {
        assert.equal(sample.maskPath, null);
      }
    }
    // Decode one pair only (each 900x900 decode costs ~100 ms).
    const defective = bottle.test.find((s) => s.defect === "broken_large")!;
    const mask = await bottle.loadMask(defective);
    const image = await bottle.loadImage(defective, { width: 256, height: 256 });
    assert.equal(mask.width, 900);
    const area = mask.data.reduce((sum, v) => sum + v, 0);
    assert.ok(area > 1000 && area < 0.5 * 900 * 900, `defect area ${area}`);
    assert.equal(image.width, 256);
    assert.equal(image.channels, 3);
  },
});
