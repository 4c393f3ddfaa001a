/**
 * Tests of the category kind (the `kind` option, category.json, MVTec's names) and of the
 * explicit validation hold-out (`validationIds`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Channels, createImage, encodePng } from "../../src/data/image.ts";
import {
  CATEGORY_FILE,
  CATEGORY_INFO,
  categoryInfo,
  type CategoryKind,
  openCategory,
  parseCategoryKind,
} from "../../src/data/mvtec.ts";
import { tinyDataset } from "./helpers.ts";

const quiet = { onWarning: () => {} };

/**
 * Adds a hand-made category to a dataset root: 8x8 images, `trainCount` in train/good, one good
 * and one "scratch" test image with its mask. Names are not MVTec's, so nothing is known about it.
 */
async function addUserCategory(
  root: string,
  name: string,
  { trainCount = 5, channels = 3 as Channels } = {},
): Promise<string> {
  const folder = join(root, name);
  const write = async (relative: string, image = createImage(8, 8, channels)) => {
    const path = join(folder, relative);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, encodePng(image));
  };
  for (let i = 0; i < trainCount; i++) {
    await write(`train/good/${String(i).padStart(3, "0")}.png`);
  }
  await write("test/good/000.png");
  await write("test/scratch/000.png");
  const mask = createImage(8, 8, 1);
  mask.data.fill(1, 0, 8);
  await write("ground_truth/scratch/000_mask.png", mask);
  return folder;
}

/** Runs `check` on a root holding MVTec's "carpet" (10 training images) and "my_fabric" (5). */
async function withCategories(check: (root: string) => Promise<void>): Promise<void> {
  const { root, cleanup } = await tinyDataset({ categories: ["carpet"] });
  try {
    await addUserCategory(root, "my_fabric");
    await check(root);
  } finally {
    await cleanup();
  }
}

function writeCategoryFile(root: string, name: string, text: string): Promise<void> {
  return Deno.writeTextFile(join(root, name, CATEGORY_FILE), text);
}

// ---- Kind

Deno.test("parseCategoryKind accepts the two kinds and names the flag otherwise", () => {
  assert.equal(parseCategoryKind("texture", "--kind"), "texture");
  assert.equal(parseCategoryKind("object", "--kind"), "object");
  for (const bad of ["Texture", "", "fabric", " object"]) {
    assert.throws(() => parseCategoryKind(bad, "--kind"), (error: Error) => {
      assert.equal(
        error.message,
        `Invalid --kind "${bad}": expected "texture" or "object"`,
      );
      return true;
    });
  }
});

Deno.test("a user category is an object unless category.json or the kind option says otherwise", async () => {
  await withCategories(async (root) => {
    const plain = await openCategory(root, "my_fabric", quiet);
    assert.deepEqual(plain.info, categoryInfo("my_fabric"), "default: as today, an object");
    assert.equal(plain.info.kind, "object");

    await writeCategoryFile(root, "my_fabric", `{"kind": "texture"}`);
    const declared = await openCategory(root, "my_fabric", quiet);
    assert.equal(declared.info.kind, "texture");
    assert.match(declared.info.notes, /Kind "texture" set by ".*my_fabric\/category\.json"/);
    // Only the kind changes: a user texture keeps the conservative augmentation of unknown names.
    assert.deepEqual(
      { ...declared.info, kind: "object", notes: "" },
      { ...categoryInfo("my_fabric"), notes: "" },
    );

    const overridden = await openCategory(root, "my_fabric", { ...quiet, kind: "object" });
    assert.equal(overridden.info.kind, "object", "the option beats category.json");

    await Deno.remove(join(root, "my_fabric", CATEGORY_FILE));
    const byOption = await openCategory(root, "my_fabric", { ...quiet, kind: "texture" });
    assert.equal(byOption.info.kind, "texture");
    assert.match(byOption.info.notes, /set by the kind option/);

    await writeCategoryFile(root, "my_fabric", "{}");
    const empty = await openCategory(root, "my_fabric", quiet);
    assert.deepEqual(empty.info, plain.info, "an empty category.json changes nothing");
  });
});

Deno.test("a known MVTec name gives way to category.json and the kind option", async () => {
  await withCategories(async (root) => {
    const carpet = await openCategory(root, "carpet", quiet);
    assert.equal(carpet.info, CATEGORY_INFO.carpet, "no override: MVTec's facts as they are");

    await writeCategoryFile(root, "carpet", `{"kind": "object"}`);
    const asObject = await openCategory(root, "carpet", quiet);
    assert.equal(asObject.info.kind, "object", "the user's choice, even against MVTec");
    assert.equal(asObject.info.maxRotationDegrees, CATEGORY_INFO.carpet.maxRotationDegrees);
    assert.equal(asObject.info.mirrorHorizontal, CATEGORY_INFO.carpet.mirrorHorizontal);

    const backToTexture = await openCategory(root, "carpet", { ...quiet, kind: "texture" });
    assert.deepEqual(backToTexture.info, CATEGORY_INFO.carpet);

    // The name-based facts themselves are untouched.
    assert.equal(categoryInfo("carpet").kind, "texture");
    assert.equal(CATEGORY_INFO.carpet.kind, "texture");
  });
});

Deno.test("grayscale: from the stored images, overridden by category.json", async () => {
  await withCategories(async (root) => {
    await addUserCategory(root, "my_gray_part", { channels: 1 });
    assert.equal((await openCategory(root, "my_gray_part", quiet)).info.grayscale, true);
    assert.equal((await openCategory(root, "my_fabric", quiet)).info.grayscale, false);

    await writeCategoryFile(root, "my_fabric", `{"kind": "texture", "grayscale": true}`);
    const declared = await openCategory(root, "my_fabric", quiet);
    assert.equal(declared.info.grayscale, true);
    assert.equal(declared.info.kind, "texture");
    assert.match(declared.info.notes, /Grayscale true set by ".*category\.json"/);

    await writeCategoryFile(root, "my_gray_part", `{"grayscale": false}`);
    const gray = await openCategory(root, "my_gray_part", quiet);
    assert.equal(gray.info.grayscale, false);
    assert.equal(gray.info.kind, "object");
  });
});

Deno.test("error: a malformed category.json names the file and what was expected", async () => {
  const cases: [string, RegExp][] = [
    [`{kind: texture}`, /Cannot read ".*my_fabric\/category\.json": .*expected a JSON object/],
    [``, /Cannot read ".*my_fabric\/category\.json".*expected a JSON object/],
    [`["texture"]`, /".*category\.json" holds \["texture"\]; expected a JSON object/],
    [`null`, /".*category\.json" holds null; expected a JSON object/],
    [`"texture"`, /".*category\.json" holds "texture"; expected a JSON object/],
    [
      `{"kind": "texture", "mirror": true}`,
      /".*category\.json" has an unknown key "mirror"; expected only "kind" \("texture" or "object"\) and "grayscale" \(true or false\)/,
    ],
    [`{"knd": "texture"}`, /unknown key "knd"/],
    [
      `{"kind": "fabric"}`,
      /".*category\.json": "kind" is "fabric"; expected "texture" or "object"/,
    ],
    [`{"kind": "Texture"}`, /"kind" is "Texture"; expected "texture" or "object"/],
    [`{"kind": 1}`, /"kind" is 1; expected "texture" or "object"/],
    [`{"kind": null}`, /"kind" is null; expected "texture" or "object"/],
    [`{"grayscale": "yes"}`, /".*category\.json": "grayscale" is "yes"; expected true or false/],
  ];
  await withCategories(async (root) => {
    for (const [text, expected] of cases) {
      await writeCategoryFile(root, "my_fabric", text);
      await assert.rejects(() => openCategory(root, "my_fabric", quiet), expected, text);
      // The kind option does not excuse a broken file: it would hide the mistake until later.
      await assert.rejects(
        () => openCategory(root, "my_fabric", { ...quiet, kind: "texture" }),
        expected,
        text,
      );
    }
    // A folder where the file should be.
    await Deno.remove(join(root, "my_fabric", CATEGORY_FILE));
    await Deno.mkdir(join(root, "my_fabric", CATEGORY_FILE));
    await assert.rejects(
      () => openCategory(root, "my_fabric", quiet),
      /Cannot read ".*my_fabric\/category\.json"/,
    );
  });
});

Deno.test("error: a kind option that is not a kind", async () => {
  await withCategories(async (root) => {
    await assert.rejects(
      () => openCategory(root, "my_fabric", { ...quiet, kind: "fabric" as CategoryKind }),
      /Invalid kind option "fabric": expected "texture" or "object"/,
    );
  });
});

// ---- Validation hold-out

Deno.test("validationIds reproduce a seeded split exactly, in file order", async () => {
  await withCategories(async (root) => {
    const seeded = await openCategory(root, "carpet", { validationFraction: 0.3, seed: 5 });
    const recorded = seeded.validation.map((sample) => sample.id);
    assert.equal(recorded.length, 3);
    const reopened = await openCategory(root, "carpet", {
      validationIds: [...recorded].reverse(),
    });
    assert.deepEqual(reopened.validation, seeded.validation);
    assert.deepEqual(reopened.train, seeded.train);
    assert.deepEqual(reopened.test, seeded.test);
  });
});

Deno.test("validationIds choose the hold-out; the rest is train", async () => {
  await withCategories(async (root) => {
    const carpet = await openCategory(root, "carpet", { validationIds: ["007", "002"] });
    assert.deepEqual(carpet.validation.map((s) => s.id), ["002", "007"], "file order");
    assert.ok(carpet.validation.every((s) => s.split === "validation" && s.defect === "good"));
    assert.deepEqual(
      carpet.train.map((s) => s.id),
      ["000", "001", "003", "004", "005", "006", "008", "009"],
    );
    assert.ok(carpet.train.every((s) => s.split === "train"));

    const none = await openCategory(root, "carpet", { validationIds: [] });
    assert.equal(none.validation.length, 0);
    assert.equal(none.train.length, 10);

    const allButOne = await openCategory(root, "my_fabric", {
      ...quiet,
      validationIds: ["000", "001", "002", "003"],
    });
    assert.deepEqual(allButOne.train.map((s) => s.id), ["004"]);
  });
});

Deno.test("error: validationIds that are not in train/good, repeated, or take everything", async () => {
  await withCategories(async (root) => {
    const folder = join(root, "carpet", "train", "good");
    await assert.rejects(
      () => openCategory(root, "carpet", { validationIds: ["002", "042"] }),
      (error: Error) => {
        assert.equal(
          error.message,
          `validationIds "042" is not an image in "${folder}" ` +
            `(ids are file names without extension, e.g. "000")`,
        );
        return true;
      },
    );
    await assert.rejects(
      () => openCategory(root, "carpet", { validationIds: ["002.png", "test/good/000"] }),
      /validationIds "002\.png", "test\/good\/000" are not images in ".*carpet\/train\/good"/,
    );
    // Only train/good counts: an id that exists in test/ alone is not a validation candidate.
    await Deno.copyFile(
      join(root, "my_fabric", "test", "good", "000.png"),
      join(root, "my_fabric", "test", "good", "900.png"),
    );
    await assert.rejects(
      () => openCategory(root, "my_fabric", { ...quiet, validationIds: ["900"] }),
      /validationIds "900" is not an image in ".*my_fabric\/train\/good"/,
    );
    await assert.rejects(
      () => openCategory(root, "carpet", { validationIds: ["003", "001", "003"] }),
      /validationIds lists "003" twice/,
    );
    await assert.rejects(
      () =>
        openCategory(root, "my_fabric", {
          ...quiet,
          validationIds: ["000", "001", "002", "003", "004"],
        }),
      /validationIds hold out all 5 images of ".*my_fabric\/train\/good"; at least one must remain/,
    );

    // Two files with one id: neither guess would be the recorded hold-out.
    const fabricTrain = join(root, "my_fabric", "train", "good");
    await Deno.copyFile(join(fabricTrain, "001.png"), join(fabricTrain, "001.jpg"));
    await assert.rejects(
      () => openCategory(root, "my_fabric", { ...quiet, validationIds: ["001"] }),
      /validationIds "001" name more than one file in ".*my_fabric\/train\/good"/,
    );
    // Other ids of that folder still work.
    const fabric = await openCategory(root, "my_fabric", { ...quiet, validationIds: ["002"] });
    assert.deepEqual(fabric.validation.map((s) => s.id), ["002"]);
  });
});

Deno.test("error: validationIds together with validationFraction or seed", async () => {
  await withCategories(async (root) => {
    await assert.rejects(
      () => openCategory(root, "carpet", { validationIds: ["001"], validationFraction: 0.1 }),
      /validationIds cannot be combined with validationFraction: the ids already fix the/,
    );
    await assert.rejects(
      () => openCategory(root, "carpet", { validationIds: [], seed: 0 }),
      /validationIds cannot be combined with seed:/,
    );
    await assert.rejects(
      () =>
        openCategory(root, "carpet", { validationIds: ["001"], validationFraction: 0, seed: 1 }),
      /validationIds cannot be combined with validationFraction and seed:/,
    );
  });
  // Checked before the file system is touched: a wrong root is not what gets reported.
  await assert.rejects(
    () => openCategory("/nonexistent/mvtec", "carpet", { validationIds: [], seed: 1 }),
    /cannot be combined/,
  );
});
