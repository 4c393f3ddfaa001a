/**
 * Reads a Keras network saved as a TensorFlow.js layers model (`model.json` with the Keras
 * topology and a weights manifest, plus binary weight shards, as `tensorflowjs_converter` writes
 * it) into a {@link BackboneGraph}: channels-last Keras layers become nodes of this engine's
 * NCHW graph, kernels are transposed to its layouts and batch norms are folded into per-channel
 * affine maps.
 *
 * Only functional Keras models (`Model`/`Functional`) are read, with the layer classes of
 * {@link SUPPORTED_LAYER_CLASSES}. `Flatten` is deliberately missing: flattening NHWC and NCHW
 * activations orders the features differently, so a following Dense would need its rows permuted.
 *
 * @module
 */

import { basename, dirname, join, posix, sep as SEPARATOR } from "node:path";
import { jsonForMessage as short, readJsonFile } from "../../util/fs.ts";
import {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphActivation,
  type GraphNode,
  type GraphOp,
  type GraphWeight,
  MAX_MODEL_INPUT_SIDE,
  ModelFormatError,
  type Preprocessing,
} from "./graph.ts";

/** The Keras layer classes the reader converts. */
export const SUPPORTED_LAYER_CLASSES = [
  "InputLayer",
  "Conv2D",
  "BatchNormalization",
  "Activation",
  "Add",
  "ZeroPadding2D",
  "MaxPooling2D",
  "GlobalAveragePooling2D",
  "Dense",
] as const;

/**
 * Keras' "caffe" preprocessing (`keras.applications.resnet50.preprocess_input`): BGR, minus the
 * ImageNet mean, no scaling. A layers model does not record its preprocessing; this is the one of
 * the Keras application networks (ResNet, VGG) that these files usually hold.
 */
export const KERAS_CAFFE_PREPROCESSING: Preprocessing = {
  channelOrder: "bgr",
  mean: [103.939, 116.779, 123.68],
  std: [1, 1, 1],
};

/**
 * Reads a weight shard, given its path as the weights manifest writes it (relative to the
 * model.json). It throws a {@link ModelFormatError} naming the shard when it cannot.
 */
export type WeightFileReader = (path: string) => Promise<Uint8Array>;

/**
 * Reads a TF.js layers model from disk; the weight shards are read from beside the model.json.
 *
 * @param modelJsonPath the model.json
 * @returns the graph, named after the Keras model, with Keras' "caffe" preprocessing
 * @throws ModelFormatError naming the model.json or a shard, and what was expected
 */
export async function readTfjsLayersModel(modelJsonPath: string): Promise<BackboneGraph> {
  const model = await readJsonFile<unknown>(
    modelJsonPath,
    (reason) =>
      new ModelFormatError(modelJsonPath, `cannot read a TF.js layers model.json: ${reason}`),
  );
  const folder = dirname(modelJsonPath);
  return convertTfjsLayersModel(model, async (path) => {
    const shard = join(folder, path);
    try {
      // A symbolic link must not lead out of the folder either.
      const [real, realFolder] = await Promise.all([Deno.realPath(shard), Deno.realPath(folder)]);
      if (!real.startsWith(realFolder + SEPARATOR)) {
        throw new ModelFormatError(
          shard,
          `resolves to ${real}, outside the model's folder ${realFolder}; expected the weight ` +
            "shards beside the model.json",
        );
      }
      return await Deno.readFile(shard);
    } catch (error) {
      if (error instanceof ModelFormatError) throw error;
      throw new ModelFormatError(
        shard,
        `cannot read this weight shard, which ${
          basename(modelJsonPath)
        }'s weightsManifest lists: ` +
          (error as Error).message,
      );
    }
  }, modelJsonPath);
}

/**
 * Converts a parsed TF.js layers model.json, reading its weight shards through `readWeightFile`
 * (so that models inside archives, or built by tests, need no files on disk).
 *
 * Feature layers: the output of the last residual block (an activation right after an Add) at
 * each spatial stride 2^(k+1) is `layer<k>`: for a ResNet, layer1..layer4 at strides 4..32.
 *
 * @param model the parsed model.json
 * @param readWeightFile reads a shard named by the weights manifest
 * @param source names the model.json in errors
 * @returns the graph
 * @throws ModelFormatError naming `source` (or a shard) and what was expected
 */
export async function convertTfjsLayersModel(
  model: unknown,
  readWeightFile: WeightFileReader,
  source: string,
): Promise<BackboneGraph> {
  const fail = (problem: string) => new ModelFormatError(source, problem);
  if (!isRecord(model)) throw fail("not a JSON object (expected a TF.js layers model.json)");
  if (model.format !== "layers-model") {
    throw fail(
      `format is ${short(model.format)}, expected "layers-model" (a Keras model converted by ` +
        "tensorflowjs_converter; graph models are not read)",
    );
  }
  const config = modelConfig(model.modelTopology, fail);
  const weights = await readWeights(model.weightsManifest, readWeightFile, fail);
  return new GraphBuilder(weights, fail).build(config);
}

// ---------------------------------------------------------------------------------------------
// model.json structure

type Json = Record<string, unknown>;
type Fail = (problem: string) => ModelFormatError;

function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The functional model's config: `{ name, layers, input_layers, output_layers }`. */
function modelConfig(topology: unknown, fail: Fail): Json {
  if (!isRecord(topology)) throw fail("has no modelTopology object");
  // The converter wraps Keras' model.to_json() as { keras_version, backend, model_config };
  // some writers store the model config itself.
  const model = isRecord(topology.model_config) ? topology.model_config : topology;
  if (model.class_name !== "Model" && model.class_name !== "Functional") {
    throw fail(
      `the model is a ${short(model.class_name)}, expected a functional Keras model ` +
        '("Model" or "Functional" with layers and inbound_nodes)',
    );
  }
  if (!isRecord(model.config) || !Array.isArray(model.config.layers)) {
    throw fail("the model config has no layers list");
  }
  return model.config;
}

/** A weight as the manifest describes it, in Keras' layout. */
type KerasWeight = GraphWeight;

interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; min?: number; scale?: number };
}

const quantizedBytes: Record<string, number> = { uint8: 1, uint16: 2 };

/**
 * Whether a manifest path names a file inside the model's folder: relative, with no '..' segment
 * and no backslash or drive letter (a model file must not make us read elsewhere).
 */
function staysInFolder(path: unknown): path is string {
  if (typeof path !== "string" || path === "" || path.includes("\\")) return false;
  if (posix.isAbsolute(path) || /^[A-Za-z]:/.test(path)) return false;
  return !posix.normalize(path).split("/").includes("..");
}

/** Reads every group of the weights manifest: its shards concatenated, then cut into weights. */
async function readWeights(
  manifest: unknown,
  readWeightFile: WeightFileReader,
  fail: Fail,
): Promise<Map<string, KerasWeight>> {
  if (!Array.isArray(manifest)) throw fail("has no weightsManifest list");
  const weights = new Map<string, KerasWeight>();
  // Each shard belongs to one group, once: a manifest listing one shard 100,000 times would
  // otherwise make the reader read it as often.
  const listed = new Set<string>();
  for (const [g, group] of manifest.entries()) {
    const label = `weightsManifest group ${g + 1}`;
    if (!isRecord(group) || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
      throw fail(`${label} is not { paths: [...], weights: [...] }`);
    }
    const entries = group.weights as ManifestEntry[];
    const sizes = entries.map((entry) => weightBytes(entry, `${label}: weight`, fail));
    const needed = sizes.reduce((a, b) => a + b, 0);
    const paths = group.paths as unknown[];
    for (const path of paths) {
      if (!staysInFolder(path)) {
        throw fail(
          `${label}: the shard path ${short(path)} leaves the model's folder; expected ` +
            "a file name relative to the model.json, without '..' or an absolute path",
        );
      }
      if (listed.has(posix.normalize(path))) {
        throw fail(`${label}: the shard ${short(path)} is listed twice; expected each once`);
      }
      listed.add(posix.normalize(path));
    }
    // One after the other: a missing shard ends the reading at once.
    const shards: Uint8Array[] = [];
    for (const path of paths as string[]) shards.push(await readWeightFile(path));
    const held = shards.reduce((sum, shard) => sum + shard.length, 0);
    if (held < needed) {
      throw fail(
        `${label}: its weights need ${needed} bytes but the shards hold ${held} (` +
          paths.map((path, i) => `${path}: ${shards[i].length}`).join(", ") +
          "); a shard is truncated or belongs to another model",
      );
    }
    const bytes = new Uint8Array(held);
    let position = 0;
    for (const shard of shards) {
      bytes.set(shard, position);
      position += shard.length;
    }
    let offset = 0;
    entries.forEach((entry, i) => {
      if (weights.has(entry.name)) throw fail(`the weight "${entry.name}" is listed twice`);
      weights.set(entry.name, {
        shape: entry.shape,
        data: decodeWeight(entry, bytes.subarray(offset, offset + sizes[i])),
      });
      offset += sizes[i];
    });
  }
  return weights;
}

/** The stored size of a manifest entry, after checking that it is a weight this reader decodes. */
function weightBytes(entry: ManifestEntry, label: string, fail: Fail): number {
  if (!isRecord(entry) || typeof entry.name !== "string" || !isShape(entry.shape)) {
    throw fail(`${label} ${short(entry)} lacks a name or a shape`);
  }
  const count = entry.shape.reduce((a, b) => a * b, 1);
  const quantization = entry.quantization;
  if (quantization) {
    const width = Object.hasOwn(quantizedBytes, quantization.dtype)
      ? quantizedBytes[quantization.dtype]
      : undefined;
    if (!width || typeof quantization.min !== "number" || typeof quantization.scale !== "number") {
      throw fail(
        `${label} "${entry.name}" is quantized as ${short(quantization)}; only uint8 and ` +
          "uint16 with min and scale are read (convert without float16 quantization)",
      );
    }
    return count * width;
  }
  if (entry.dtype !== "float32") {
    throw fail(`${label} "${entry.name}" has dtype ${short(entry.dtype)}, expected float32`);
  }
  return count * 4;
}

function isShape(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((n) => Number.isInteger(n) && n >= 0);
}

function decodeWeight(entry: ManifestEntry, bytes: Uint8Array): Float32Array {
  const quantization = entry.quantization;
  // slice() copies to an aligned buffer; the data is little-endian, like every WebGPU host.
  if (!quantization) return new Float32Array(bytes.slice().buffer);
  const { min, scale } = quantization as { min: number; scale: number };
  const levels = quantization.dtype === "uint8" ? bytes : new Uint16Array(bytes.slice().buffer);
  return Float32Array.from(levels, (q) => min + q * scale);
}

// ---------------------------------------------------------------------------------------------
// Layers → nodes

/** What is known of a node's result: per-sample shape ([C, H, W] or [features]) and stride. */
interface NodeInfo {
  shape: number[];
  /** Spatial stride against the input (rows), for naming feature layers. */
  stride: number;
}

interface KerasLayer {
  name: string;
  className: string;
  config: Json;
  inbound: string[];
}

class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly weights = new Map<string, GraphWeight>();
  readonly info = new Map<string, NodeInfo>();
  /** Keras layer name → the node holding that layer's output. */
  readonly produced = new Map<string, string>();
  inputSize: [number, number] | undefined;

  constructor(readonly kerasWeights: Map<string, KerasWeight>, readonly fail: Fail) {}

  build(config: Json): BackboneGraph {
    const inputs = config.input_layers;
    if (Array.isArray(inputs) && inputs.length !== 1) {
      throw this.fail(`the model has ${inputs.length} inputs, expected one image input`);
    }
    for (const layer of config.layers as unknown[]) this.#convert(this.#parseLayer(layer));
    if (!this.inputSize) throw this.fail("has no InputLayer");
    const outputs = config.output_layers;
    const output = Array.isArray(outputs) && outputs.length === 1 && Array.isArray(outputs[0])
      ? this.produced.get(outputs[0][0])
      : undefined;
    const probabilities = output !== undefined &&
        this.nodes.find((node) => node.name === output)?.kind === "softmax"
      ? output
      : undefined;
    return {
      name: typeof config.name === "string" ? config.name : "tfjs-model",
      nodes: this.nodes,
      weights: this.weights,
      inputSize: this.inputSize,
      preprocessing: KERAS_CAFFE_PREPROCESSING,
      ...(probabilities !== undefined ? { probabilities } : {}),
      featureLayers: this.#featureLayers(),
    };
  }

  #parseLayer(layer: unknown): KerasLayer {
    if (!isRecord(layer) || !isRecord(layer.config) || typeof layer.class_name !== "string") {
      throw this.fail(`a layer is not { class_name, config, inbound_nodes }: ${short(layer)}`);
    }
    const name = typeof layer.name === "string" ? layer.name : layer.config.name;
    if (typeof name !== "string") throw this.fail(`a ${layer.class_name} layer has no name`);
    const what = `layer "${name}" (${layer.class_name})`;
    const calls = layer.inbound_nodes ?? [];
    if (!Array.isArray(calls)) throw this.fail(`${what} has inbound_nodes ${short(calls)}`);
    if (calls.length > 1) {
      throw this.fail(`${what} is called ${calls.length} times; shared layers are not read`);
    }
    const call = calls[0] ?? [];
    if (!Array.isArray(call)) {
      throw this.fail(`${what} has inbound_nodes in an unknown form: ${short(calls)}`);
    }
    const inbound = call.map((entry) => {
      // Keras 2 writes each input as [layer name, call index, output index, kwargs].
      if (!Array.isArray(entry) || typeof entry[0] !== "string") {
        throw this.fail(`${what} has inbound_nodes in an unknown form: ${short(calls)}`);
      }
      if (entry[1] !== 0 || entry[2] !== 0) {
        throw this.fail(
          `${what} takes output ${short(entry[2])} of call ${short(entry[1])} of "${
            entry[0]
          }"; only the ` +
            "first output of layers called once is read",
        );
      }
      return entry[0];
    });
    if (layer.config.data_format !== undefined && layer.config.data_format !== "channels_last") {
      throw this.fail(
        `${what} has data_format ${short(layer.config.data_format)}, expected channels_last`,
      );
    }
    return { name, className: layer.class_name, config: layer.config, inbound };
  }

  #convert(layer: KerasLayer): void {
    const { name, className, config } = layer;
    const what = `layer "${name}" (${className})`;
    const fail = (problem: string) => this.fail(`${what}: ${problem}`);
    if (className === "InputLayer") return this.#input(layer, fail);
    const inputs = layer.inbound.map((source) => {
      const node = this.produced.get(source);
      if (node === undefined) throw fail(`takes "${source}", which no earlier layer produces`);
      return node;
    });
    const single = () => {
      if (inputs.length !== 1) throw fail(`has ${inputs.length} inputs, expected one`);
      return this.info.get(inputs[0])!;
    };
    const spatial = () => {
      const input = single();
      if (input.shape.length !== 3) {
        throw fail(`expects an image-shaped input, got [${input.shape}]`);
      }
      return input;
    };
    switch (className) {
      case "Conv2D":
        return this.#conv(layer, inputs, spatial(), fail);
      case "BatchNormalization":
        return this.#batchNorm(layer, inputs, single(), fail);
      case "Activation": {
        const input = single();
        const activation = config.activation;
        if (activation === "softmax") {
          if (input.shape.length !== 1) throw fail(`softmax of [${input.shape}] is not read`);
          return this.#add(name, { kind: "softmax" }, inputs, input);
        }
        return this.#add(
          name,
          { kind: "activation", activation: activationOf(activation, fail) },
          inputs,
          input,
        );
      }
      case "Add": {
        if (inputs.length < 2) throw fail(`has ${inputs.length} inputs, expected two or more`);
        const infos = inputs.map((input) => this.info.get(input)!);
        if (infos.some((info) => info.shape.join() !== infos[0].shape.join())) {
          throw fail(`adds differently shaped inputs ${infos.map((i) => `[${i.shape}]`)}`);
        }
        return this.#add(name, { kind: "add", activation: "none" }, inputs, infos[0]);
      }
      case "ZeroPadding2D": {
        const input = spatial();
        const [[top, bottom], [left, right]] = paddingOf(config.padding, fail);
        const [c, h, w] = input.shape;
        return this.#add(name, { kind: "pad", pads: [top, bottom, left, right] }, inputs, {
          shape: [c, h + top + bottom, w + left + right],
          stride: input.stride,
        });
      }
      case "MaxPooling2D": {
        const input = spatial();
        const window = pairOf(config.pool_size, "pool_size", fail);
        const stride = config.strides == null ? window : pairOf(config.strides, "strides", fail);
        const padding = paddingModeOf(config.padding, fail);
        return this.#add(name, { kind: "maxPool", window, stride, padding }, inputs, {
          shape: [
            input.shape[0],
            ...windowOutput(input.shape, window, stride, [1, 1], padding, fail),
          ],
          stride: input.stride * stride[0],
        });
      }
      case "GlobalAveragePooling2D": {
        const input = spatial();
        if (config.keepdims === true) throw fail("keepdims is true, expected [N, C] output");
        return this.#add(name, { kind: "globalAvgPool" }, inputs, {
          shape: [input.shape[0]],
          stride: input.stride,
        });
      }
      case "Dense":
        return this.#dense(layer, inputs, single(), fail);
      default:
        throw fail(
          `the layer class is not supported (supported: ${SUPPORTED_LAYER_CLASSES.join(", ")})`,
        );
    }
  }

  #input(layer: KerasLayer, fail: Fail): void {
    if (this.inputSize) throw fail("is a second input; one image input is read");
    const shape = layer.config.batch_input_shape;
    if (
      !Array.isArray(shape) || shape.length !== 4 || shape[3] !== 3 ||
      !shape.slice(1, 3).every((n) => Number.isInteger(n) && n > 0 && n <= MAX_MODEL_INPUT_SIDE)
    ) {
      throw fail(
        `batch_input_shape is ${short(shape)}, expected [null, height, width, 3] with height ` +
          `and width at most ${MAX_MODEL_INPUT_SIDE}`,
      );
    }
    this.inputSize = [shape[1], shape[2]];
    this.produced.set(layer.name, GRAPH_INPUT);
    this.info.set(GRAPH_INPUT, { shape: [3, shape[1], shape[2]], stride: 1 });
  }

  #conv(layer: KerasLayer, inputs: string[], input: NodeInfo, fail: Fail): void {
    const { name, config } = layer;
    if ((config.groups ?? 1) !== 1) throw fail(`groups is ${short(config.groups)}, expected 1`);
    const kernel = this.#weight(name, "kernel", fail);
    const [kh, kw, cin, cout] = kernel.shape;
    const window = pairOf(config.kernel_size, "kernel_size", fail);
    if (
      kernel.shape.length !== 4 || kh !== window[0] || kw !== window[1] ||
      cin !== input.shape[0] || cout !== config.filters
    ) {
      throw fail(
        `kernel is [${kernel.shape}], expected [${window}, ${input.shape[0]}, ${
          short(config.filters)
        }] ` +
          "(height, width, input channels, filters)",
      );
    }
    // Keras HWIO → this engine's OIHW. An empty kernel (0 input channels or filters) has nothing
    // to copy; looping over its other sizes, which the file may make huge, would take seconds.
    const weight = new Float32Array(kernel.data.length);
    for (let y = 0; y < kh && weight.length > 0; y++) {
      for (let x = 0; x < kw; x++) {
        for (let i = 0; i < cin; i++) {
          const from = ((y * kw + x) * cin + i) * cout;
          for (let o = 0; o < cout; o++) {
            weight[((o * cin + i) * kh + y) * kw + x] = kernel.data[from + o];
          }
        }
      }
    }
    this.weights.set(`${name}.weight`, { shape: [cout, cin, kh, kw], data: weight });
    const bias = this.#bias(layer, cout, fail);
    const stride = pairOf(config.strides, "strides", fail);
    const dilation = pairOf(config.dilation_rate ?? 1, "dilation_rate", fail);
    const padding = paddingModeOf(config.padding, fail);
    this.#add(
      name,
      {
        kind: "conv2d",
        weight: `${name}.weight`,
        ...(bias ? { bias } : {}),
        stride,
        padding,
        dilation,
        groups: 1,
        activation: activationOf(config.activation, fail),
      },
      inputs,
      {
        shape: [cout, ...windowOutput(input.shape, window, stride, dilation, padding, fail)],
        stride: input.stride * stride[0],
      },
    );
  }

  #batchNorm(layer: KerasLayer, inputs: string[], input: NodeInfo, fail: Fail): void {
    const { name, config } = layer;
    const axis = Array.isArray(config.axis) && config.axis.length === 1
      ? config.axis[0]
      : config.axis;
    // Keras' axis counts the batch: 3 is the channels of NHWC, -1 the last axis of any input.
    const channelAxis = input.shape.length === 3 ? 3 : 1;
    if (axis !== -1 && axis !== channelAxis) {
      throw fail(`normalizes axis ${short(config.axis)}, expected the channel axis (-1)`);
    }
    const channels = input.shape[0];
    const vector = (weight: string) => {
      const w = this.#weight(name, weight, fail);
      if (w.shape.join() !== String(channels)) {
        throw fail(`${weight} is [${w.shape}], expected [${channels}]`);
      }
      return w.data;
    };
    const mean = vector("moving_mean");
    const variance = vector("moving_variance");
    const gamma = config.scale === false ? undefined : vector("gamma");
    const beta = config.center === false ? undefined : vector("beta");
    const epsilon = typeof config.epsilon === "number" ? config.epsilon : 1e-3;
    const scale = new Float32Array(channels);
    const offset = new Float32Array(channels);
    for (let c = 0; c < channels; c++) {
      scale[c] = (gamma?.[c] ?? 1) / Math.sqrt(variance[c] + epsilon);
      offset[c] = (beta?.[c] ?? 0) - mean[c] * scale[c];
    }
    this.weights.set(`${name}.scale`, { shape: [channels], data: scale });
    this.weights.set(`${name}.offset`, { shape: [channels], data: offset });
    this.#add(
      name,
      {
        kind: "channelAffine",
        scale: `${name}.scale`,
        offset: `${name}.offset`,
        activation: "none",
      },
      inputs,
      input,
    );
  }

  #dense(layer: KerasLayer, inputs: string[], input: NodeInfo, fail: Fail): void {
    const { name, config } = layer;
    const kernel = this.#weight(name, "kernel", fail);
    const [features, units] = kernel.shape;
    if (input.shape.length !== 1) {
      throw fail(`expects [N, features] input, got [${input.shape}] per sample`);
    }
    if (kernel.shape.length !== 2 || features !== input.shape[0] || units !== config.units) {
      throw fail(
        `kernel is [${kernel.shape}], expected [${input.shape[0]}, ${short(config.units)}]`,
      );
    }
    // Keras [in, out] → this engine's [out, in] (nothing to copy, however many features, when
    // there are no units).
    const weight = new Float32Array(kernel.data.length);
    for (let i = 0; i < features && weight.length > 0; i++) {
      for (let o = 0; o < units; o++) weight[o * features + i] = kernel.data[i * units + o];
    }
    this.weights.set(`${name}.weight`, { shape: [units, features], data: weight });
    const bias = this.#bias(layer, units, fail);
    const softmax = config.activation === "softmax";
    // A softmax head becomes two nodes; the softmax keeps the layer's name, which later layers and
    // the model's outputs refer to.
    const denseName = softmax ? `${name}/logits` : name;
    const result = { shape: [units], stride: input.stride };
    this.#add(
      denseName,
      {
        kind: "dense",
        weight: `${name}.weight`,
        ...(bias ? { bias } : {}),
        activation: softmax ? "none" : activationOf(config.activation, fail),
      },
      inputs,
      result,
    );
    if (softmax) this.#add(name, { kind: "softmax" }, [denseName], result);
  }

  /** The bias of a layer with `use_bias`, stored under `<layer>.bias`; its graph name or none. */
  #bias(layer: KerasLayer, size: number, fail: Fail): string | undefined {
    if (layer.config.use_bias === false) return undefined;
    const bias = this.#weight(layer.name, "bias", fail);
    if (bias.shape.join() !== String(size)) {
      throw fail(`bias is [${bias.shape}], expected [${size}]`);
    }
    this.weights.set(`${layer.name}.bias`, bias);
    return `${layer.name}.bias`;
  }

  #weight(layer: string, weight: string, fail: Fail): KerasWeight {
    const found = this.kerasWeights.get(`${layer}/${weight}`);
    if (!found) throw fail(`the weightsManifest lists no "${layer}/${weight}"`);
    return found;
  }

  #add(name: string, op: GraphOp, inputs: string[], info: NodeInfo): void {
    if (this.info.has(name)) throw this.fail(`two nodes are named "${name}"`);
    this.nodes.push({ name, inputs, ...op });
    this.info.set(name, info);
    this.produced.set(name, name);
  }

  /** layer<k>: the last residual block output (activation after an Add) at stride 2^(k+1). */
  #featureLayers(): Record<string, string> {
    const kinds = new Map(this.nodes.map((node) => [node.name, node.kind]));
    const lastAtStride = new Map<number, string>();
    for (const node of this.nodes) {
      if (node.kind === "activation" && kinds.get(node.inputs[0]) === "add") {
        lastAtStride.set(this.info.get(node.name)!.stride, node.name);
      }
    }
    const layers: [number, string][] = [];
    for (const [stride, name] of lastAtStride) {
      const k = Math.log2(stride) - 1;
      if (Number.isInteger(k) && k >= 1) layers.push([k, name]);
    }
    return Object.fromEntries(layers.sort((a, b) => a[0] - b[0]).map(([k, n]) => [`layer${k}`, n]));
  }
}

function activationOf(activation: unknown, fail: Fail): GraphActivation {
  if (activation === "linear" || activation === undefined) return "none";
  if (activation === "relu") return "relu";
  throw fail(`activation ${short(activation)} is not read (linear and relu are)`);
}

function pairOf(value: unknown, field: string, fail: Fail): [number, number] {
  const pair = typeof value === "number" ? [value, value] : value;
  if (
    !Array.isArray(pair) || pair.length !== 2 || !pair.every((n) => Number.isInteger(n) && n > 0)
  ) {
    throw fail(`${field} is ${short(value)}, expected a positive integer or a pair of them`);
  }
  return [pair[0], pair[1]];
}

function paddingModeOf(padding: unknown, fail: Fail): "same" | "valid" {
  if (padding === "same" || padding === "valid") return padding;
  throw fail(`padding is ${short(padding)}, expected "same" or "valid"`);
}

/** ZeroPadding2D's padding: n, [rows, columns] or [[top, bottom], [left, right]]. */
function paddingOf(padding: unknown, fail: Fail): [[number, number], [number, number]] {
  const sides = (value: unknown): [number, number] | undefined => {
    if (Number.isInteger(value) && (value as number) >= 0) {
      return [value as number, value as number];
    }
    if (
      Array.isArray(value) && value.length === 2 &&
      value.every((n) => Number.isInteger(n) && n >= 0)
    ) return [value[0], value[1]];
  };
  const both = Array.isArray(padding) && padding.length === 2
    ? [sides(padding[0]), sides(padding[1])]
    : [sides(padding), sides(padding)];
  if (!both[0] || !both[1]) {
    throw fail(`padding is ${short(padding)}, expected [[top, bottom], [left, right]]`);
  }
  return [both[0], both[1]];
}

/** Output [H, W] of a window operation over [C, H, W], as TensorFlow computes it. */
function windowOutput(
  shape: number[],
  window: [number, number],
  stride: [number, number],
  dilation: [number, number],
  padding: "same" | "valid",
  fail: Fail,
): [number, number] {
  const size = (n: number, axis: 0 | 1) =>
    padding === "same"
      ? Math.ceil(n / stride[axis])
      : Math.floor((n - dilation[axis] * (window[axis] - 1) - 1) / stride[axis]) + 1;
  const out: [number, number] = [size(shape[1], 0), size(shape[2], 1)];
  if (out[0] < 1 || out[1] < 1) {
    throw fail(`its window does not fit the ${shape[1]}×${shape[2]} input`);
  }
  return out;
}
