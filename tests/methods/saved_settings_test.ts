/**
 * A saved model's settings are checked against its method's options when it is loaded: a damaged
 * or foreign file is refused with an InputError naming the file and the setting, for every method
 * whose model folder carries a settings JSON.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { encodeSafetensors } from "../../src/nn/checkpoint.ts";
import { loadCnnDict } from "../../src/methods/cnn_dict/cnn_dict.ts";
import { checkSavedSettings } from "../../src/methods/model_files.ts";
import { loadPadim, padimMethod } from "../../src/methods/padim/padim.ts";
import { loadPatchcore } from "../../src/methods/patchcore/patchcore.ts";
import { loadGmm } from "../../src/methods/gmm/model.ts";
import { loadVariation } from "../../src/methods/variation/model.ts";
import { InputError } from "../../src/util/errors.ts";

Deno.test("checkSavedSettings: required settings present, declared ones valid", () => {
  const good = { backbone: "resnet50", imageSize: 224, channels: 100, trainImages: 0 };
  assert.equal(checkSavedSettings("p.json", padimMethod, good, ["channels"]), good);
  const cases: [unknown, RegExp][] = [
    [null, /"p\.json": "settings" holds null; expected a JSON object/],
    [[1], /"settings" holds \[1\]/],
    [{ backbone: "resnet50" }, /"p\.json": "settings" lacks "channels"/],
    [{ ...good, channels: -3 }, /"settings\.channels" is invalid: .*--channels expects/],
    [{ ...good, backbone: "vgg" }, /"settings\.backbone" is invalid: .*resnet50 or/],
    [{ ...good, imageSize: "224px" }, /"settings\.imageSize" is invalid/],
  ];
  for (const [value, expected] of cases) {
    assert.throws(
      () => checkSavedSettings("p.json", padimMethod, value, ["channels"]),
      (error: Error) => error instanceof InputError && expected.test(error.message),
      JSON.stringify(value),
    );
  }
});

/** Writes a model folder whose tensors file is valid and whose settings file holds `settings`. */
async function damagedModel(file: string, settings: unknown): Promise<string> {
  const directory = await Deno.makeTempDir({ prefix: "anodet-damaged-model-" });
  await Deno.writeFile(join(directory, "model.safetensors"), encodeSafetensors(new Map(), {}));
  await Deno.writeTextFile(join(directory, file), JSON.stringify(settings));
  return directory;
}

Deno.test("every loader refuses damaged settings with an InputError naming the file", async () => {
  const loaders: [string, (directory: string) => Promise<unknown>, unknown, RegExp][] = [
    ["padim.json", loadPadim, { format: "anodet-padim/1" }, /padim\.json": "settings" holds/],
    [
      "padim.json",
      loadPadim,
      {
        format: "anodet-padim/1",
        settings: { backbone: "resnet50", imageSize: 64, channels: 10, trainImages: 0 },
        grid: [8],
      },
      /padim\.json": "grid" is \[8\]; expected \[rows, columns\]/,
    ],
    [
      "patchcore.json",
      loadPatchcore,
      { format: "anodet-patchcore/1", settings: { backbone: "resnet50", imageSize: 64 } },
      /patchcore\.json": "settings" lacks "embeddingDim"/,
    ],
    [
      "cnn_dict.json",
      loadCnnDict,
      { format: "anodet-cnn-dict/1", settings: { backbone: "resnet50", imageSize: 0 } },
      /cnn_dict\.json": "settings" lacks "patchSize"/,
    ],
    [
      "gmm.json",
      loadGmm,
      { format: "anodet-gmm-texture/1", settings: { levels: 0 } },
      /gmm\.json" is not a valid GMM texture model: gmm: levels must be a positive integer/,
    ],
    [
      "variation.json",
      loadVariation,
      { format: "anodet-variation/1", settings: {}, width: 1e6, height: 1e6 },
      /variation\.json" is not a valid variation model: "width" and "height"/,
    ],
  ];
  for (const [file, load, settings, expected] of loaders) {
    const directory = await damagedModel(file, settings);
    try {
      await assert.rejects(
        () => load(directory),
        (error: Error) => error instanceof InputError && expected.test(error.message),
        `${file}: ${JSON.stringify(settings)}`,
      );
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  }
});
