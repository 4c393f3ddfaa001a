/**
 * Loader for datasets in the MVTec AD folder layout:
 *
 * ```text
 * ROOT/<category>/train/good/*.png                 defect-free training images
 * ROOT/<category>/test/<defect>/*.png              test images; <defect> = "good" for normal ones
 * ROOT/<category>/ground_truth/<defect>/<id>_mask.png   0/255 masks for defective test images
 * ```
 *
 * Any folder in this layout works (e.g. a user's own product line); the 15 MVTec AD categories
 * additionally carry known facts ({@link CATEGORY_INFO}). A category folder may hold a
 * `category.json` ({@link CATEGORY_FILE}) stating what its name cannot, e.g. `{"kind": "texture"}`
 * for a user's own fabric; {@link OpenOptions.kind} says which source of the kind wins.
 *
 * Opening a category reads only file listings, image headers and `category.json`; pixels are
 * decoded lazily on request and kept in a bounded LRU cache, because the full benchmark (5354
 * images up to 1024x1024) does not fit in memory as floats.
 *
 * Size rule: the first training image (in file-name order) sets the category's size. Images of a
 * different size are resized to it when loaded, with a warning at open time naming them, because
 * a product line shot with two camera settings is still one product line. A mask whose size
 * differs from its own image, in contrast, is an error: its pixels cannot be trusted to align.
 *
 * @module
 */

import { InputError } from "../util/errors.ts";
import { basename, extname, join } from "node:path";
import {
  type Channels,
  createImage,
  type FloatImage,
  IMAGE_EXTENSIONS,
  type ImageHeader,
  readImage,
  readImageHeader,
  resize,
} from "./image.ts";
import { Random } from "./random.ts";
import { isDirectory, listDirectory, readJsonFile } from "../util/fs.ts";

/** The five texture categories of MVTec AD. */
export const TEXTURE_CATEGORIES: readonly string[] = ["carpet", "grid", "leather", "tile", "wood"];

/** The ten object categories of MVTec AD. */
export const OBJECT_CATEGORIES: readonly string[] = [
  "bottle",
  "cable",
  "capsule",
  "hazelnut",
  "metal_nut",
  "pill",
  "screw",
  "toothbrush",
  "transistor",
  "zipper",
];

/** All 15 MVTec AD categories, textures first. */
export const MVTEC_CATEGORIES: readonly string[] = [...TEXTURE_CATEGORIES, ...OBJECT_CATEGORIES];

/**
 * Textures are stationary patterns (patch-based training); objects are whole, posed parts.
 * Methods are meant for one kind or both.
 */
export type CategoryKind = "texture" | "object";

/** The category kinds, in the order error messages list them. */
export const CATEGORY_KINDS: readonly CategoryKind[] = ["texture", "object"];

function isCategoryKind(value: unknown): value is CategoryKind {
  return (CATEGORY_KINDS as readonly unknown[]).includes(value);
}

const EXPECTED_KINDS = CATEGORY_KINDS.map((kind) => `"${kind}"`).join(" or ");

/**
 * Reads a category kind given on the command line (e.g. `--kind texture`).
 *
 * @param text the flag's value, exactly as typed ("texture" or "object")
 * @param flagName the flag as the user typed it, e.g. "--kind", so the error can name it
 * @returns the kind
 * @throws Error naming the flag, the value and the expected values when `text` is not a kind
 */
export function parseCategoryKind(text: string, flagName: string): CategoryKind {
  if (isCategoryKind(text)) return text;
  throw new InputError(`Invalid ${flagName} "${text}": expected ${EXPECTED_KINDS}`);
}

/** Known facts about a category that the pipeline needs (mainly for augmentation). */
export interface CategoryInfo {
  /** Folder name. */
  readonly name: string;
  /** Textures are stationary patterns (patch-based training); objects are whole, posed parts. */
  readonly kind: CategoryKind;
  /**
   * Stored as grayscale on disk (grid, screw, zipper in MVTec AD), or declared so by the
   * category's {@link CATEGORY_FILE}.
   */
  readonly grayscale: boolean;
  /** Left–right mirroring yields a still defect-free image. */
  readonly mirrorHorizontal: boolean;
  /** Top–bottom mirroring yields a still defect-free image. */
  readonly mirrorVertical: boolean;
  /** Largest rotation (degrees, either direction) that keeps an image defect-free; 180 = any. */
  readonly maxRotationDegrees: number;
  /** Why the augmentation limits are what they are. */
  readonly notes: string;
}

function texture(name: string, grayscale: boolean, notes: string): CategoryInfo {
  return {
    name,
    kind: "texture",
    grayscale,
    mirrorHorizontal: true,
    mirrorVertical: true,
    maxRotationDegrees: 180,
    notes,
  };
}

/**
 * Facts about the 15 MVTec AD categories. The mirroring/rotation limits follow the MVTec AD paper
 * (mirroring "where applicable") and the dataset's own defect classes: whatever a defect class
 * describes must not be produced by augmentation.
 */
export const CATEGORY_INFO: Readonly<Record<string, CategoryInfo>> = Object.freeze({
  carpet: texture("carpet", false, "Stationary woven texture: any rotation and mirroring."),
  grid: texture("grid", true, "Regular mesh, grayscale on disk: any rotation and mirroring."),
  leather: texture("leather", false, "Stationary grain: any rotation and mirroring."),
  tile: texture("tile", false, "Random stone pattern: any rotation and mirroring."),
  wood: texture("wood", false, "Grain direction varies across images: any rotation, mirroring."),
  bottle: {
    name: "bottle",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: true,
    mirrorVertical: true,
    maxRotationDegrees: 180,
    notes: "Seen from above and rotationally symmetric: any rotation and mirroring.",
  },
  cable: {
    name: "cable",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 10,
    notes: "Mirroring reorders the three coloured wires, which is the cable_swap defect.",
  },
  capsule: {
    name: "capsule",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 5,
    notes: "Printed '500' would be mirrored (faulty_imprint); capsules lie aligned horizontally.",
  },
  hazelnut: {
    name: "hazelnut",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: true,
    mirrorVertical: true,
    maxRotationDegrees: 180,
    notes: "Natural object at arbitrary orientation: any rotation and mirroring.",
  },
  metal_nut: {
    name: "metal_nut",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 180,
    notes: "A mirrored nut is the 'flip' defect; rotation about its axis is normal.",
  },
  pill: {
    name: "pill",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 5,
    notes: "Printed 'FF' would be mirrored (faulty_imprint); pills lie aligned horizontally.",
  },
  screw: {
    name: "screw",
    kind: "object",
    grayscale: true,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 180,
    notes: "A mirrored thread is left-handed, i.e. a defect; screws lie at any angle.",
  },
  toothbrush: {
    name: "toothbrush",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: true,
    mirrorVertical: false,
    maxRotationDegrees: 5,
    notes: "Left-right symmetric head shot upright: horizontal mirroring only.",
  },
  transistor: {
    name: "transistor",
    kind: "object",
    grayscale: false,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 0,
    notes: "Pose is the defect: a rotated or shifted transistor is 'misplaced'; no mirroring.",
  },
  zipper: {
    name: "zipper",
    kind: "object",
    grayscale: true,
    mirrorHorizontal: true,
    mirrorVertical: true,
    maxRotationDegrees: 3,
    notes: "Symmetric interlocking teeth, vertical and grayscale: mirroring, tiny rotations.",
  },
});

/**
 * Facts for a category by name. Unknown names (a user's own product line) get conservative
 * defaults: an object, no mirroring, small rotations only.
 *
 * @param name category folder name
 * @param grayscale for unknown names, whether the images are stored as grayscale
 * @returns the category facts
 */
export function categoryInfo(name: string, grayscale = false): CategoryInfo {
  return CATEGORY_INFO[name] ?? {
    name,
    kind: "object",
    grayscale,
    mirrorHorizontal: false,
    mirrorVertical: false,
    maxRotationDegrees: 5,
    notes: "Not an MVTec AD category: conservative defaults (no mirroring, small rotations).",
  };
}

/**
 * Name of the optional file in a category folder that states facts its name cannot tell, e.g.
 * `{"kind": "texture"}` or `{"kind": "texture", "grayscale": true}`. See {@link CategoryFile}.
 */
export const CATEGORY_FILE = "category.json";

/** What a {@link CATEGORY_FILE} may say; every key is optional, no other key is allowed. */
export interface CategoryFile {
  /** The category's kind; overrides MVTec's known kind for the folder name. */
  readonly kind?: CategoryKind;
  /** Whether the images are grayscale; overrides what the first training image stores. */
  readonly grayscale?: boolean;
}

const CATEGORY_FILE_EXAMPLE = `{"kind": "texture", "grayscale": false}`;

/** A {@link CATEGORY_FILE} that was found, with its path for messages. */
interface FoundCategoryFile {
  readonly path: string;
  readonly content: CategoryFile;
}

/**
 * Reads a category folder's {@link CATEGORY_FILE}, or null when the folder has none.
 * Strict on purpose: a typo such as `"knd"` or `"textile"` would otherwise silently leave the
 * category an object.
 */
async function readCategoryFile(categoryPath: string): Promise<FoundCategoryFile | null> {
  const path = join(categoryPath, CATEGORY_FILE);
  try {
    await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new InputError(`Cannot read "${path}": ${(error as Error).message}`, { cause: error });
  }
  const expected = `expected a JSON object such as ${CATEGORY_FILE_EXAMPLE}`;
  const content = await readJsonFile<unknown>(
    path,
    (reason) => new InputError(`Cannot read "${path}": ${reason} (${expected})`),
  );
  if (typeof content !== "object" || content === null || Array.isArray(content)) {
    throw new InputError(`"${path}" holds ${JSON.stringify(content)}; ${expected}`);
  }
  const fields = content as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (key !== "kind" && key !== "grayscale") {
      throw new InputError(
        `"${path}" has an unknown key "${key}"; expected only "kind" (${EXPECTED_KINDS}) ` +
          `and "grayscale" (true or false)`,
      );
    }
  }
  if (fields.kind !== undefined && !isCategoryKind(fields.kind)) {
    throw new InputError(
      `"${path}": "kind" is ${JSON.stringify(fields.kind)}; expected ${EXPECTED_KINDS}`,
    );
  }
  if (fields.grayscale !== undefined && typeof fields.grayscale !== "boolean") {
    throw new InputError(
      `"${path}": "grayscale" is ${JSON.stringify(fields.grayscale)}; expected true or false`,
    );
  }
  return { path, content: { kind: fields.kind, grayscale: fields.grayscale } };
}

/**
 * The facts of an opened category: MVTec's (or the conservative defaults) by name, with the kind
 * and grayscale overridden by the category file and the kind option. Only kind and grayscale
 * change: the augmentation limits stay those of the name, because nothing but the name tells
 * which transformations would forge a defect.
 */
function resolveCategoryInfo(
  name: string,
  storedGrayscale: boolean,
  file: FoundCategoryFile | null,
  kindOption: CategoryKind | undefined,
): CategoryInfo {
  const byName = categoryInfo(name, storedGrayscale);
  const kind = kindOption ?? file?.content.kind ?? byName.kind;
  const grayscale = file?.content.grayscale ?? byName.grayscale;
  // Say where an override came from: the notes are what a puzzled user reads.
  const overrides: string[] = [];
  if (kind !== byName.kind) {
    const source = kindOption !== undefined ? "the kind option" : `"${file!.path}"`;
    overrides.push(`Kind "${kind}" set by ${source}.`);
  }
  if (grayscale !== byName.grayscale) {
    overrides.push(`Grayscale ${grayscale} set by "${file!.path}".`);
  }
  if (overrides.length === 0) return byName;
  return { ...byName, kind, grayscale, notes: [byName.notes, ...overrides].join(" ") };
}

/** Which part of the data a sample belongs to. */
export type Split = "train" | "validation" | "test";

/** One image of a category, with its labels; no pixels (see {@link MvtecCategory.loadImage}). */
export interface Sample {
  /** Category name. */
  readonly category: string;
  /** Train, validation (held out from train/good) or test. */
  readonly split: Split;
  /** Defect folder name; "good" for defect-free images. */
  readonly defect: string;
  /** True for images outside "good". */
  readonly anomalous: boolean;
  /** File stem, e.g. "000". */
  readonly id: string;
  /** Path of the image file. */
  readonly imagePath: string;
  /** Path of the mask, or null for good images (their mask is all zeros). */
  readonly maskPath: string | null;
  /** Stored width (from the file header). */
  readonly width: number;
  /** Stored height (from the file header). */
  readonly height: number;
}

/** How to deliver pixels. Omitted fields mean the category's native value. */
export interface ImageRequest {
  /** 1 = grayscale (BT.601 luma), 3 = RGB (grayscale files replicated). */
  readonly channels?: Channels;
  /** Output width. */
  readonly width?: number;
  /** Output height. */
  readonly height?: number;
}

/** Options for {@link MvtecCategory.open}. */
export interface OpenOptions {
  /**
   * Fraction of train/good held out as validation by a seeded shuffle, 0 ≤ f < 1. Default 0.1.
   * Not together with {@link OpenOptions.validationIds}.
   */
  readonly validationFraction?: number;
  /** Seed of the validation split. Default 0. Not together with `validationIds`. */
  readonly seed?: number;
  /**
   * Exactly these train/good ids (file names without extension, {@link Sample.id}) are the
   * validation split and the rest is train, e.g. the ids a run recorded, so that evaluation sees
   * the hold-out that training saw. The given order does not matter: validation keeps the
   * train/good file order, as the seeded split does, so reopening with
   * `category.validation.map((s) => s.id)` reproduces `category.validation` exactly. An empty
   * list holds out nothing. Not together with `validationFraction` or `seed`.
   */
  readonly validationIds?: readonly string[];
  /**
   * The category's kind, overriding everything else. Without it the kind comes from the
   * category's {@link CATEGORY_FILE} when present, else from MVTec's facts for a known name, else
   * "object". Contradicting MVTec (e.g. "object" for carpet) is allowed: the user decides.
   */
  readonly kind?: CategoryKind;
  /** Upper bound on cached decoded pixels, in bytes. Default 256 MiB. */
  readonly cacheBytes?: number;
  /** Receives warnings (e.g. mixed image sizes). Default `console.warn`. */
  readonly onWarning?: (message: string) => void;
}

/** Cache counters, for tests and tuning. */
export interface CacheStats {
  /** Images held. */
  readonly entries: number;
  /** Bytes held. */
  readonly bytes: number;
  /** Requests served from the cache. */
  readonly hits: number;
  /** Requests that decoded. */
  readonly misses: number;
}

/** A least-recently-used cache bounded by the total byte size of its values. */
export class LruCache<V> {
  readonly #entries = new Map<string, { value: V; bytes: number }>();
  readonly #maxBytes: number;
  #bytes = 0;

  /**
   * Creates an empty cache.
   *
   * @param maxBytes the most bytes held; a single larger value is not cached at all
   */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Looks a value up and marks it most recently used.
   *
   * @param key cache key
   * @returns the value, marked most recently used, or undefined
   */
  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    // Map iteration order is insertion order: re-inserting moves the key to the "recent" end.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  /**
   * Stores a value, evicting least recently used ones until the bound holds.
   *
   * @param key cache key
   * @param value value to store
   * @param bytes its size in bytes
   */
  set(key: string, value: V, bytes: number): void {
    const previous = this.#entries.get(key);
    if (previous !== undefined) {
      this.#entries.delete(key);
      this.#bytes -= previous.bytes;
    }
    if (bytes > this.#maxBytes) return;
    this.#entries.set(key, { value, bytes });
    this.#bytes += bytes;
    for (const [oldKey, entry] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(oldKey);
      this.#bytes -= entry.bytes;
    }
  }

  /** Number of values held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Total bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}

/**
 * Splits items into a training part and a validation hold-out of `round(fraction * n)` items,
 * chosen by a seeded shuffle. Both parts keep the original order. Same seed, same split.
 *
 * @param items items to split
 * @param fraction validation fraction, 0 ≤ fraction < 1
 * @param seed shuffle seed
 * @returns the two parts
 */
export function splitValidation<T>(
  items: readonly T[],
  fraction: number,
  seed: number,
): { train: T[]; validation: T[] } {
  if (!(fraction >= 0 && fraction < 1)) {
    throw new RangeError(`validation fraction must be in [0, 1), got ${fraction}`);
  }
  const count = Math.round(fraction * items.length);
  const order = new Random(seed).shuffle(items.map((_, i) => i));
  const held = new Set(order.slice(0, count));
  return {
    train: items.filter((_, i) => !held.has(i)),
    validation: items.filter((_, i) => held.has(i)),
  };
}

/** Image files of a folder, in numeric-aware order ("2.png" before "10.png"). */
function listImageFiles(folder: string): Promise<string[]> {
  return listDirectory(folder, { kind: "file", extensions: IMAGE_EXTENSIONS });
}

function listFolders(folder: string): Promise<string[]> {
  return listDirectory(folder, { kind: "directory" });
}

function stem(fileName: string): string {
  return basename(fileName, extname(fileName));
}

/**
 * Splits train/good into validation = the samples whose ids are listed, train = the rest, both
 * in the original (file) order.
 */
function holdOutIds(
  goodTrain: readonly Sample[],
  ids: readonly string[],
  trainFolder: string,
): { train: Sample[]; validation: Sample[] } {
  const held = new Set<string>();
  for (const id of ids) {
    if (held.has(id)) throw new InputError(`validationIds lists "${id}" twice`);
    held.add(id);
  }
  const filesPerId = new Map<string, number>();
  for (const sample of goodTrain) filesPerId.set(sample.id, (filesPerId.get(sample.id) ?? 0) + 1);
  const missing = ids.filter((id) => !filesPerId.has(id));
  if (missing.length > 0) {
    throw new InputError(
      `validationIds ${missing.map((id) => `"${id}"`).join(", ")} ` +
        `${missing.length === 1 ? "is not an image" : "are not images"} in "${trainFolder}" ` +
        `(ids are file names without extension, e.g. "${goodTrain[0].id}")`,
    );
  }
  // "000.png" and "000.jpg" share an id; holding out both, or guessing one, would not be the
  // hold-out that was recorded.
  const ambiguous = ids.filter((id) => filesPerId.get(id)! > 1);
  if (ambiguous.length > 0) {
    throw new InputError(
      `validationIds ${ambiguous.map((id) => `"${id}"`).join(", ")} name more than one file ` +
        `in "${trainFolder}" (same name, different extension); rename one of them`,
    );
  }
  if (held.size === goodTrain.length) {
    throw new InputError(
      `validationIds hold out all ${goodTrain.length} images of "${trainFolder}"; ` +
        `at least one must remain for training`,
    );
  }
  return {
    train: goodTrain.filter((sample) => !held.has(sample.id)),
    validation: goodTrain.filter((sample) => held.has(sample.id)),
  };
}

/** Runs `task` over `items` with at most `limit` in flight, keeping result order. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Lists the category folders under a root: sub-folders that contain a `train` folder.
 *
 * @param root dataset root
 * @returns category names, sorted
 * @throws Error when the root does not exist
 */
export async function listCategories(root: string): Promise<string[]> {
  if (!(await isDirectory(root))) throw new InputError(`Dataset root "${root}" does not exist`);
  const categories: string[] = [];
  for (const name of await listFolders(root)) {
    if (await isDirectory(join(root, name, "train"))) categories.push(name);
  }
  return categories;
}

/** One category of an MVTec-AD-layout dataset with lazy, cached pixel access. */
export class MvtecCategory {
  /** Dataset root. */
  readonly root: string;
  /** Category name (folder name). */
  readonly name: string;
  /** Category folder. */
  readonly path: string;
  /**
   * Known facts (conservative defaults for non-MVTec categories), with the kind and grayscale
   * resolved from {@link OpenOptions.kind} and the {@link CATEGORY_FILE}. Decide texture versus
   * object by `info.kind`, never by the name alone.
   */
  readonly info: CategoryInfo;
  /** train/good minus the validation hold-out. */
  readonly train: readonly Sample[];
  /** Validation hold-out from train/good. */
  readonly validation: readonly Sample[];
  /** All test images, good and defective, ordered by defect folder then file name. */
  readonly test: readonly Sample[];
  /** Defect folder names under test/, excluding "good". */
  readonly defectTypes: readonly string[];
  /**
   * Reference width: that of the first training image. Images keep their own sizes (see
   * {@link loadImage}); methods that train at one size start from this one.
   */
  readonly width: number;
  /** Reference height: that of the first training image. */
  readonly height: number;
  /** Whether the category's images (train and test) do not all have the reference size. */
  readonly mixedSizes: boolean;
  /** Channels stored on disk by the first training image. */
  readonly storedChannels: Channels;

  readonly #cache: LruCache<FloatImage>;
  readonly #pending = new Map<string, Promise<FloatImage>>();
  #hits = 0;
  #misses = 0;

  private constructor(
    root: string,
    name: string,
    info: CategoryInfo,
    parts: { train: Sample[]; validation: Sample[]; test: Sample[]; defectTypes: string[] },
    reference: ImageHeader,
    mixedSizes: boolean,
    cacheBytes: number,
  ) {
    this.root = root;
    this.name = name;
    this.path = join(root, name);
    this.info = info;
    this.train = parts.train;
    this.validation = parts.validation;
    this.test = parts.test;
    this.defectTypes = parts.defectTypes;
    this.width = reference.width;
    this.height = reference.height;
    this.mixedSizes = mixedSizes;
    this.storedChannels = reference.channels;
    this.#cache = new LruCache(cacheBytes);
  }

  /**
   * Opens a category: lists its files, reads every image header, pairs test images with masks and
   * splits off the validation set. No pixels are decoded.
   *
   * @param root dataset root (the folder holding category folders)
   * @param name category folder name
   * @param options kind, split, cache and warning options
   * @returns the opened category
   * @throws Error naming the offending path for: a missing root, an unknown category (listing what
   *   the root holds), missing train/good or test folders, an empty train folder, an unreadable
   *   image header, a defective test image without a mask, a mask whose size differs from its
   *   image, a malformed {@link CATEGORY_FILE}, a validation id that is not in train/good (or
   *   is listed twice, or would leave train empty); and for `validationIds` given together with
   *   `validationFraction` or `seed`, or a `kind` that is not a {@link CategoryKind}
   */
  static async open(root: string, name: string, options: OpenOptions = {}): Promise<MvtecCategory> {
    const warn = options.onWarning ?? ((message: string) => console.warn(message));
    // Option mistakes first: they need no file system and should not wait for thousands of headers.
    if (options.kind !== undefined && !isCategoryKind(options.kind)) {
      throw new InputError(`Invalid kind option "${options.kind}": expected ${EXPECTED_KINDS}`);
    }
    if (options.validationIds !== undefined) {
      const conflicting = (["validationFraction", "seed"] as const)
        .filter((option) => options[option] !== undefined);
      if (conflicting.length > 0) {
        throw new InputError(
          `validationIds cannot be combined with ${conflicting.join(" and ")}: the ids already ` +
            `fix the validation split`,
        );
      }
    }
    if (!(await isDirectory(root))) throw new InputError(`Dataset root "${root}" does not exist`);
    const categoryPath = join(root, name);
    if (!(await isDirectory(categoryPath))) {
      const available = await listCategories(root);
      const holds = available.length > 0
        ? `it holds: ${available.join(", ")}`
        : "it holds no category folders (expected <category>/train/good/)";
      throw new InputError(`Unknown category "${name}" in "${root}"; ${holds}`);
    }
    // Read before the image headers, so that a malformed file fails fast.
    const categoryFile = await readCategoryFile(categoryPath);

    const trainFolder = join(categoryPath, "train", "good");
    if (!(await isDirectory(trainFolder))) {
      throw new InputError(`Missing folder "${trainFolder}" (expected ${name}/train/good/*.png)`);
    }
    const trainFiles = await listImageFiles(trainFolder);
    if (trainFiles.length === 0) {
      throw new InputError(`Empty training folder "${trainFolder}": no .png or .jpg images`);
    }
    const testFolder = join(categoryPath, "test");
    if (!(await isDirectory(testFolder))) {
      throw new InputError(`Missing folder "${testFolder}" (expected ${name}/test/<defect>/*.png)`);
    }
    const testFolders = await listFolders(testFolder);
    const defectTypes = testFolders.filter((folder) => folder !== "good");

    // Pair each defective test image with its mask; collect everything whose header we need.
    interface Pending {
      split: "train" | "test";
      defect: string;
      imagePath: string;
      maskPath: string | null;
    }
    const pending: Pending[] = trainFiles.map((file) => ({
      split: "train",
      defect: "good",
      imagePath: join(trainFolder, file),
      maskPath: null,
    }));
    for (const defect of testFolders) {
      const folder = join(testFolder, defect);
      const files = await listImageFiles(folder);
      const masks = defect === "good" ? new Map<string, string>() : await listMasks(
        join(categoryPath, "ground_truth", defect),
        files.length > 0,
      );
      for (const file of files) {
        const imagePath = join(folder, file);
        let maskPath: string | null = null;
        if (defect !== "good") {
          maskPath = masks.get(stem(file)) ?? null;
          if (maskPath === null) {
            const expected = join(categoryPath, "ground_truth", defect, `${stem(file)}_mask.png`);
            throw new InputError(
              `Defective test image "${imagePath}" has no mask (expected "${expected}")`,
            );
          }
        }
        pending.push({ split: "test", defect, imagePath, maskPath });
      }
    }

    const headers = await mapLimited(pending, 16, (item) => readImageHeader(item.imagePath));
    const reference = headers[0];
    const samples: Sample[] = [];
    const resized: string[] = [];
    for (let i = 0; i < pending.length; i++) {
      const item = pending[i];
      const header = headers[i];
      if (header.width !== reference.width || header.height !== reference.height) {
        resized.push(`${item.imagePath} (${header.width}x${header.height})`);
      }
      samples.push({
        category: name,
        split: item.split,
        defect: item.defect,
        anomalous: item.defect !== "good",
        id: stem(item.imagePath),
        imagePath: item.imagePath,
        maskPath: item.maskPath,
        width: header.width,
        height: header.height,
      });
    }
    const withMasks = samples.filter((sample) => sample.maskPath !== null);
    const maskHeaders = await mapLimited(withMasks, 16, (s) => readImageHeader(s.maskPath!));
    withMasks.forEach((sample, i) => {
      const mask = maskHeaders[i];
      if (mask.width !== sample.width || mask.height !== sample.height) {
        throw new InputError(
          `Mask "${sample.maskPath}" is ${mask.width}x${mask.height} but its image ` +
            `"${sample.imagePath}" is ${sample.width}x${sample.height}`,
        );
      }
    });
    if (resized.length > 0) {
      // Mixed sizes are supported (each map comes out at its image's size); a note says so, since
      // a size the user did not expect is often a sign of a wrong file in the folder.
      warn(
        `Category "${name}": ${resized.length} image(s) differ from the size of the first ` +
          `training image (${reference.width}x${reference.height}); each is scored at its own ` +
          `size: ` + resized.slice(0, 5).join(", ") + (resized.length > 5 ? ", …" : ""),
      );
    }

    const goodTrain = samples.filter((sample) => sample.split === "train");
    const split = options.validationIds !== undefined
      ? holdOutIds(goodTrain, options.validationIds, trainFolder)
      : splitValidation(goodTrain, options.validationFraction ?? 0.1, options.seed ?? 0);
    const info = resolveCategoryInfo(name, reference.channels === 1, categoryFile, options.kind);
    return new MvtecCategory(
      root,
      name,
      info,
      {
        train: split.train,
        validation: split.validation.map((sample) => ({ ...sample, split: "validation" })),
        test: samples.filter((sample) => sample.split === "test"),
        defectTypes,
      },
      reference,
      resized.length > 0,
      options.cacheBytes ?? 256 * 1024 * 1024,
    );
  }

  /**
   * Decodes (or fetches from the cache) a sample's image. The returned image is shared with the
   * cache: treat it as read-only (copy with `cloneImage` before modifying).
   *
   * @param sample a sample of this category
   * @param request channels and size; default: stored channels at the image's own size
   * @returns the image
   * @throws Error naming the file when it is corrupt or truncated
   */
  loadImage(sample: Sample, request: ImageRequest = {}): Promise<FloatImage> {
    const channels = request.channels ?? this.storedChannels;
    const width = request.width ?? sample.width;
    const height = request.height ?? sample.height;
    return this.#cached(`image|${sample.imagePath}|${channels}|${width}x${height}`, async () => {
      const image = await readImage(sample.imagePath, channels);
      return resize(image, width, height);
    });
  }

  /**
   * Decodes (or fetches from the cache) a sample's ground-truth mask as a 1-channel image of
   * exactly 0 and 1. Good samples give all zeros. When resized, the mask is re-binarised at 0.5.
   * The returned image is shared with the cache: treat it as read-only.
   *
   * @param sample a sample of this category
   * @param request size; default: the image's own size (channels are always 1)
   * @returns the binary mask
   * @throws Error naming the file when it is corrupt or its size differs from its image
   */
  loadMask(sample: Sample, request: Omit<ImageRequest, "channels"> = {}): Promise<FloatImage> {
    const width = request.width ?? sample.width;
    const height = request.height ?? sample.height;
    const maskPath = sample.maskPath;
    if (maskPath === null) return Promise.resolve(createImage(width, height, 1));
    return this.#cached(`mask|${maskPath}|${width}x${height}`, async () => {
      const mask = await readImage(maskPath, 1);
      if (mask.width !== sample.width || mask.height !== sample.height) {
        throw new InputError(
          `Mask "${maskPath}" is ${mask.width}x${mask.height} but its image ` +
            `"${sample.imagePath}" is ${sample.width}x${sample.height}`,
        );
      }
      const scaled = resize(mask, width, height);
      for (let i = 0; i < scaled.data.length; i++) scaled.data[i] = scaled.data[i] >= 0.5 ? 1 : 0;
      return scaled;
    });
  }

  /**
   * Reports cache counters.
   *
   * @returns cache counters
   */
  cacheStats(): CacheStats {
    return {
      entries: this.#cache.size,
      bytes: this.#cache.bytes,
      hits: this.#hits,
      misses: this.#misses,
    };
  }

  #cached(key: string, produce: () => Promise<FloatImage>): Promise<FloatImage> {
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      this.#hits++;
      return Promise.resolve(hit);
    }
    // Concurrent requests for the same image share one decode.
    const inFlight = this.#pending.get(key);
    if (inFlight !== undefined) {
      this.#hits++;
      return inFlight;
    }
    this.#misses++;
    const promise = produce().then((image) => {
      this.#cache.set(key, image, image.data.byteLength);
      return image;
    }).finally(() => this.#pending.delete(key));
    this.#pending.set(key, promise);
    return promise;
  }
}

async function listMasks(folder: string, required: boolean): Promise<Map<string, string>> {
  const masks = new Map<string, string>();
  if (!(await isDirectory(folder))) {
    if (required) {
      throw new InputError(`Missing mask folder "${folder}" for defective test images`);
    }
    return masks;
  }
  for (const file of await listImageFiles(folder)) {
    // MVTec names masks "<id>_mask.png"; also accept a bare "<id>.png".
    const id = stem(file).replace(/_mask$/, "");
    masks.set(id, join(folder, file));
  }
  return masks;
}

/**
 * Opens a category; see {@link MvtecCategory.open}.
 *
 * @param root dataset root
 * @param name category folder name
 * @param options kind, split, cache and warning options
 * @returns the opened category
 */
export function openCategory(
  root: string,
  name: string,
  options: OpenOptions = {},
): Promise<MvtecCategory> {
  return MvtecCategory.open(root, name, options);
}
