/**
 * The parsers the fuzzing harness attacks, each with a valid seed made by the project's own
 * writers (or, for JPEG, by imagescript's encoder), the mutations that suit its format, and the
 * reads that make up one case.
 *
 * @module
 */

import { join } from "node:path";
import { hashSeed, Random } from "../data/random.ts";
import { createImage, encodePng, readImage, readImageHeader } from "../data/image.ts";
import { decodeTiff, encodeTiff } from "../eval/tiff.ts";
import { readModelFiles, saveModelFiles } from "../methods/model_files.ts";
import { readTfjsLayersModel } from "../nn/backbones/tfjs.ts";
import { readTflite } from "../nn/backbones/tflite.ts";
import { loadGraph, saveGraph } from "../nn/backbones/graph_file.ts";
import { decodeSafetensors, encodeSafetensors, type StoredTensor } from "../nn/checkpoint.ts";
import {
  readFinishedRun,
  readRun,
  RUN_FILES,
  type RunConfig,
  writeRunConfig,
  writeRunThreshold,
} from "../run/folder.ts";
import {
  jpegLayout,
  pngLayout,
  repairPngChecksums,
  safetensorsLayout,
  tiffLayout,
} from "./layouts.ts";
import {
  type BinaryLayout,
  mutateBinary,
  mutateBytes,
  type Mutated,
  mutateJson,
  mutateJsonFile,
  setDimensionsHuge,
} from "./mutators.ts";
import { smallTfliteModel, smallTfliteModelWithLayout } from "./tflite_model.ts";
import { syntheticTfjsModel } from "./tfjs_model.ts";

/** One file of a seed and how to mutate it. */
export interface SeedFile {
  /** The valid contents. */
  bytes: Uint8Array;
  /** Makes a mutated copy (never changes `bytes`). */
  mutate(bytes: Uint8Array, random: Random): Mutated;
  /** How often this file is the one mutated, relative to the others (default 1). */
  weight?: number;
  /** Whether a case may leave this file out (the parser must then say it is missing). */
  optional?: boolean;
}

/** One read of a case: resolves with anything when the parser accepts the input. */
export type ParseStep = () => unknown;

/** A parser under test. */
export interface FuzzTarget {
  /** Its name on the command line. */
  name: string;
  /** What is read, for the help text. */
  description: string;
  /** Whether the case's files must be written into its folder before the steps run. */
  onDisk: boolean;
  /** The valid files, by name. */
  seed(): Promise<Map<string, SeedFile>>;
  /** The reads of one case, on its files (in memory) and its folder (on disk). */
  steps(files: ReadonlyMap<string, Uint8Array>, directory: string): ParseStep[];
}

/** A binary file's mutations, with a repair applied afterwards (PNG checksums). */
function binarySeed(
  bytes: Uint8Array,
  layout: BinaryLayout,
  dimensionFields: readonly string[],
  repair: (bytes: Uint8Array) => Uint8Array = (b) => b,
): SeedFile {
  return {
    bytes,
    mutate(input, random) {
      const mutated = random.chance(0.1)
        ? setDimensionsHuge(input, layout, dimensionFields, random)
        : mutateBinary(input, layout, random);
      // Most cases get valid checksums, so that mutations reach the decoder; some do not, so
      // that checksum errors are tested too.
      return random.chance(0.8) ? { ...mutated, bytes: repair(mutated.bytes) } : mutated;
    },
  };
}

const png: FuzzTarget = {
  name: "png",
  description: "PNG through the image loader (readImageHeader, readImage)",
  onDisk: true,
  seed() {
    // Gradients with a little texture, so that the compressed data is not trivially short.
    const image = createImage(16, 12, 3);
    image.data.forEach((_, i) => (image.data[i] = ((i * 7) % 256 + (i % 5) * 9) / 300));
    const bytes = encodePng(image);
    const seed = binarySeed(
      bytes,
      pngLayout(bytes),
      ["IHDR width", "IHDR height"],
      repairPngChecksums,
    );
    return Promise.resolve(new Map([["image.png", seed]]));
  },
  steps(_, directory) {
    const path = join(directory, "image.png");
    return [() => readImageHeader(path), () => readImage(path), () => readImage(path, 1)];
  },
};

const jpeg: FuzzTarget = {
  name: "jpeg",
  description: "JPEG through the image loader (readImageHeader, readImage)",
  onDisk: true,
  async seed() {
    // Made at run time by imagescript's encoder, so that no foreign data file is committed.
    const { Image } = await import("imagescript");
    const picture = new Image(16, 12);
    for (let y = 1; y <= 12; y++) {
      for (let x = 1; x <= 16; x++) {
        picture.setPixelAt(x, y, Image.rgbaToColor(x * 15, y * 20, (x * y) % 256, 255));
      }
    }
    const bytes = await picture.encodeJPEG(85);
    return new Map([["image.jpg", binarySeed(bytes, jpegLayout(bytes), ["frame"])]]);
  },
  steps(_, directory) {
    const path = join(directory, "image.jpg");
    return [() => readImageHeader(path), () => readImage(path), () => readImage(path, 1)];
  },
};

const tiff: FuzzTarget = {
  name: "tiff",
  description: "anomaly-map TIFF (decodeTiff)",
  onDisk: false,
  seed() {
    const map = Float32Array.from({ length: 7 * 5 }, (_, i) => i / 7);
    const bytes = encodeTiff(map, 7, 5, { rowsPerStrip: 2 });
    const layout = tiffLayout(bytes);
    const seed = binarySeed(bytes, layout, ["ImageWidth value", "ImageLength value"]);
    return Promise.resolve(new Map([["map.tiff", seed]]));
  },
  steps(files) {
    return [() => decodeTiff(files.get("map.tiff")!, "map.tiff")];
  },
};

/** Splits safetensors bytes into the header text and the data (undefined when cut short). */
function splitSafetensors(bytes: Uint8Array): { header: Uint8Array; data: Uint8Array } | undefined {
  if (bytes.length < 8) return undefined;
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (8 + length > bytes.length) return undefined;
  return { header: bytes.subarray(8, 8 + length), data: bytes.subarray(8 + length) };
}

/** Rebuilds safetensors bytes around a new header, keeping the data. */
function withHeader(header: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/**
 * Mutations of a safetensors file: its JSON header (shapes, dtypes, offsets, metadata) with the
 * length prefix rewritten to match, or its bytes.
 */
function safetensorsSeed(bytes: Uint8Array): SeedFile {
  const binary = binarySeed(bytes, safetensorsLayout(bytes), ["header length"]);
  return {
    bytes,
    mutate(input, random) {
      const parts = splitSafetensors(input);
      if (!parts || random.chance(0.35)) return binary.mutate(input, random);
      const header = mutateJson(parts.header, random);
      return {
        bytes: withHeader(header.bytes, parts.data),
        description: `header: ${header.description}`,
      };
    },
  };
}

/** Three small tensors (2-D, 1-D, 3-D) and a metadata entry, as the project writes them. */
const SEED_TENSORS = new Map<string, StoredTensor>([
  ["weight", { shape: [2, 3], data: Float32Array.of(1, -2, 3.5, 0, 1e-3, -7) }],
  ["bias", { shape: [4], data: Float32Array.of(0.25, 0.5, 0.75, 1) }],
  ["cube", { shape: [1, 1, 2], data: Float32Array.of(-1, 1) }],
]);

const safetensors: FuzzTarget = {
  name: "safetensors",
  description: "safetensors checkpoints and model tensors (decodeSafetensors)",
  onDisk: false,
  seed() {
    const bytes = encodeSafetensors(SEED_TENSORS, { format: "anodet-fuzz/1" });
    return Promise.resolve(new Map([["model.safetensors", safetensorsSeed(bytes)]]));
  },
  steps(files) {
    return [() => decodeSafetensors(files.get("model.safetensors")!, "model.safetensors")];
  },
};

/** A JSON file's mutations. */
function jsonSeed(bytes: Uint8Array, weight = 1, optional = false): SeedFile {
  return { bytes, mutate: mutateJsonFile, weight, optional };
}

/** Writes files through `write` into a fresh temporary folder and returns them by name. */
async function filesWrittenBy(
  write: (directory: string) => Promise<void>,
): Promise<Map<string, Uint8Array>> {
  const directory = await Deno.makeTempDir({ prefix: "anodet-fuzz-seed-" });
  try {
    await write(directory);
    const files = new Map<string, Uint8Array>();
    for await (const entry of Deno.readDir(directory)) {
      files.set(entry.name, await Deno.readFile(join(directory, entry.name)));
    }
    return files;
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}

const runJson: FuzzTarget = {
  name: "run-json",
  description: "a run folder's config.json and threshold.json (readRun, readFinishedRun)",
  onDisk: true,
  async seed() {
    const config: RunConfig = {
      method: "patchcore",
      category: "bottle",
      data_root: "/data/mvtec_ad",
      kind: "object",
      preset: "quick",
      seed: 0,
      engine_version: "0.1.0",
      validation_ids: ["003", "017"],
      options: { coresetRatio: 0.1, imageSize: 224 },
      created: "2026-11-28T00:00:00.000Z",
    };
    const files = await filesWrittenBy(async (directory) => {
      await writeRunConfig(directory, config);
      await writeRunThreshold(directory, { threshold: 0.25, source: "validation", min_area: 20 });
    });
    return new Map([
      [RUN_FILES.config, jsonSeed(files.get(RUN_FILES.config)!, 3)],
      [RUN_FILES.threshold, jsonSeed(files.get(RUN_FILES.threshold)!, 2, true)],
    ]);
  },
  steps(_, directory) {
    return [() => readRun(directory), () => readFinishedRun(directory)];
  },
};

/** A PaDiM model's settings file, format and tensor sizes, as src/methods/padim writes them. */
const PADIM_SETTINGS = "padim.json";
const PADIM_FORMAT = "anodet-padim/1";
const PADIM_TENSORS: Record<string, number> = {
  mean: 4 * 3,
  inverse_covariance: 4 * 3 * 3,
  channel_indices: 3,
};

const modelJson: FuzzTarget = {
  name: "model-json",
  description: "a method's saved settings JSON and model.safetensors (readModelFiles)",
  onDisk: true,
  async seed() {
    // A representative PaDiM model folder (grid 2×2, 3 channels), written by the method's own
    // writer; training a real one would need a backbone and a GPU.
    const files = await filesWrittenBy((directory) =>
      saveModelFiles(
        directory,
        PADIM_SETTINGS,
        {
          format: PADIM_FORMAT,
          settings: { backbone: "resnet50", imageSize: 224, channels: 3, trainImages: 0 },
          grid: [2, 2],
        },
        new Map<string, StoredTensor>([
          ["mean", { shape: [4, 3], data: new Float32Array(PADIM_TENSORS.mean).fill(0.5) }],
          [
            "inverse_covariance",
            { shape: [4, 3, 3], data: new Float32Array(PADIM_TENSORS.inverse_covariance) },
          ],
          ["channel_indices", { shape: [3], data: Float32Array.of(7, 1, 42) }],
        ]),
      )
    );
    return new Map([
      [PADIM_SETTINGS, jsonSeed(files.get(PADIM_SETTINGS)!, 3)],
      ["model.safetensors", {
        ...safetensorsSeed(files.get("model.safetensors")!),
        optional: true,
      }],
    ]);
  },
  steps(_, directory) {
    return [async () => {
      const saved = await readModelFiles(directory, PADIM_SETTINGS, PADIM_FORMAT, "PaDiM model");
      for (const [name, size] of Object.entries(PADIM_TENSORS)) saved.tensor(name, size);
      return saved;
    }];
  },
};

const tflite: FuzzTarget = {
  name: "tflite",
  description: "TFLite FlatBuffer models (readTflite)",
  onDisk: false,
  seed() {
    const { bytes, layout } = smallTfliteModelWithLayout();
    const dimensions = ["int vector element"];
    return Promise.resolve(new Map([["model.tflite", binarySeed(bytes, layout, dimensions)]]));
  },
  steps(files) {
    return [() => readTflite(files.get("model.tflite")!, "model.tflite")];
  },
};

/**
 * Mutations of a backbone graph file: the JSON held in one of its metadata strings (nodes, input
 * size, preprocessing, feature layers, labels), or the file as a safetensors file.
 */
function graphFileSeed(bytes: Uint8Array): SeedFile {
  const asSafetensors = safetensorsSeed(bytes);
  return {
    bytes,
    mutate(input, random) {
      const parts = splitSafetensors(input);
      if (!parts || random.chance(0.4)) return asSafetensors.mutate(input, random);
      let header;
      try {
        header = JSON.parse(new TextDecoder().decode(parts.header));
      } catch {
        return asSafetensors.mutate(input, random);
      }
      // The metadata strings that hold JSON (an earlier mutation may have changed their type).
      const metadata = header?.__metadata__;
      const keys = typeof metadata === "object" && metadata !== null
        ? Object.keys(metadata).filter((key) =>
          typeof metadata[key] === "string" && /^[[{]/.test(metadata[key])
        )
        : [];
      if (keys.length === 0) return asSafetensors.mutate(input, random);
      const key = random.pick(keys);
      const value = mutateJson(new TextEncoder().encode(metadata[key]), random);
      metadata[key] = new TextDecoder().decode(value.bytes);
      const text = new TextEncoder().encode(JSON.stringify(header));
      return { bytes: withHeader(text, parts.data), description: `${key}: ${value.description}` };
    },
  };
}

const graphFile: FuzzTarget = {
  name: "graph-file",
  description: "a converted backbone graph: safetensors with JSON metadata (loadGraph)",
  onDisk: true,
  async seed() {
    const graph = readTflite(smallTfliteModel(), "small.tflite");
    const files = await filesWrittenBy((directory) =>
      saveGraph(graph, join(directory, "graph.safetensors"), ["cat", "dog"])
    );
    return new Map([["graph.safetensors", graphFileSeed(files.get("graph.safetensors")!)]]);
  },
  steps(_, directory) {
    return [() => loadGraph(join(directory, "graph.safetensors"))];
  },
};

/** Shard paths that lead out of the model's folder, which the reader must refuse. */
const ESCAPING_PATHS = ["../outside.bin", "/etc/hostname", "a/../../b.bin", "C:\\model.bin", ""];

const tfjs: FuzzTarget = {
  name: "tfjs",
  description: "TF.js layers models: model.json and weight shards (readTfjsLayersModel)",
  onDisk: true,
  seed() {
    const { model, shards } = syntheticTfjsModel();
    const files = new Map<string, SeedFile>([["model.json", {
      bytes: new TextEncoder().encode(JSON.stringify(model)),
      weight: 4,
      mutate(input, random) {
        if (!random.chance(0.05)) return mutateJsonFile(input, random);
        const escaping = random.pick(ESCAPING_PATHS);
        const inJson = JSON.stringify(escaping).slice(1, -1);
        const text = new TextDecoder().decode(input).replace(
          /group1-shard1of2\.bin/g,
          () => inJson,
        );
        return { bytes: new TextEncoder().encode(text), description: `shard path ${escaping}` };
      },
    }]]);
    for (const [name, bytes] of shards) {
      files.set(name, { bytes, mutate: mutateBytes, optional: true });
    }
    return Promise.resolve(files);
  },
  steps(_, directory) {
    return [() => readTfjsLayersModel(join(directory, "model.json"))];
  },
};

/** Every target, in the order the harness runs them. */
export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  png,
  jpeg,
  tiff,
  safetensors,
  runJson,
  modelJson,
  tflite,
  tfjs,
  graphFile,
];

/** A case: the files after mutation (a file left out is missing) and what was done. */
export interface FuzzCase {
  files: Map<string, Uint8Array>;
  description: string;
}

/**
 * Case `index` of a run with seed `fuzzSeed`: it depends on these and the target's name alone,
 * so that a reported case is made again, in the worker or on the command line.
 */
export function caseNumber(
  target: FuzzTarget,
  seed: ReadonlyMap<string, SeedFile>,
  fuzzSeed: number,
  index: number,
): FuzzCase {
  return makeCase(seed, new Random(hashSeed(fuzzSeed, target.name, index)));
}

/**
 * Makes one case from the seed: one to three stacked mutations, each of a file picked by weight;
 * now and then an optional file is left out.
 */
function makeCase(seed: ReadonlyMap<string, SeedFile>, random: Random): FuzzCase {
  const files = new Map([...seed].map(([name, file]) => [name, file.bytes]));
  const optional = [...seed].filter(([, file]) => file.optional).map(([name]) => name);
  if (optional.length > 0 && random.chance(0.04)) {
    const name = random.pick(optional);
    files.delete(name);
    return { files, description: `${name} left out` };
  }
  const names = [...seed.keys()];
  const weights = names.map((name) => seed.get(name)!.weight ?? 1);
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  const count = random.chance(0.7) ? 1 : random.chance(0.67) ? 2 : 3;
  const descriptions: string[] = [];
  for (let i = 0; i < count; i++) {
    let draw = random.uniform(0, total);
    const index = weights.findIndex((weight) => (draw -= weight) < 0);
    const name = names[index === -1 ? names.length - 1 : index];
    const mutated = seed.get(name)!.mutate(files.get(name)!, random);
    files.set(name, mutated.bytes);
    descriptions.push(names.length > 1 ? `${name}: ${mutated.description}` : mutated.description);
  }
  return { files, description: descriptions.join("; ") };
}
