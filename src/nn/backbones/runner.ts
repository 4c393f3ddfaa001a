/**
 * Runs a {@link BackboneGraph} on the engine: `features()` returns intermediate feature maps for
 * the feature methods (PatchCore, PaDiM, the CNN feature dictionary), `classify()` the ImageNet
 * top-k of one picture. Inference only: nothing records gradients, and each intermediate result
 * is freed as soon as its last consumer has run, so a deep network's activations never pile up.
 */

import { init, keep, noGrad, type Tensor, tensor, tidy } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";
import { samePadding } from "../../tensor/ops/geometry.ts";
import type { FusedActivation } from "../../tensor/ops/gemm.ts";
import { convertChannels, type FloatImage, resize } from "../../data/image.ts";
import {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphActivation,
  type GraphNode,
  type GraphPadding,
  type GraphWeight,
} from "./graph.ts";

/** One line of {@link Backbone.classify}'s answer. */
export interface Prediction {
  /** Class index in the network's output. */
  index: number;
  /** The class name from the labels, or "class <index>" without labels. */
  label: string;
  probability: number;
}

/**
 * Folds each inference batch norm ("channelAffine") into the convolution that feeds it, when
 * nothing else reads the convolution's raw output: w′ = w·scale per output channel and
 * b′ = b·scale + offset. The folded node takes the batch norm's name, activation and place, so
 * the graph computes the same values with one op instead of two.
 */
export function foldBatchNorms(graph: BackboneGraph): BackboneGraph {
  const consumers = new Map<string, number>();
  for (const node of graph.nodes) {
    for (const input of node.inputs) consumers.set(input, (consumers.get(input) ?? 0) + 1);
  }
  const named = new Set(Object.values(graph.featureLayers));
  if (graph.probabilities) named.add(graph.probabilities);
  const byName = new Map(graph.nodes.map((node) => [node.name, node]));
  const weights = new Map(graph.weights);
  const folded = new Set<string>();
  const nodes: GraphNode[] = [];
  for (const node of graph.nodes) {
    const conv = node.kind === "channelAffine" ? byName.get(node.inputs[0]) : undefined;
    if (
      node.kind !== "channelAffine" || conv?.kind !== "conv2d" || conv.activation !== "none" ||
      consumers.get(conv.name) !== 1 || named.has(conv.name)
    ) {
      nodes.push(node);
      continue;
    }
    const w = requireWeight(graph, conv.weight, node.name);
    const scale = requireWeight(graph, node.scale, node.name).data;
    const offset = requireWeight(graph, node.offset, node.name).data;
    const bias = conv.bias ? requireWeight(graph, conv.bias, conv.name).data : undefined;
    const perChannel = w.data.length / w.shape[0];
    const weight = new Float32Array(w.data.length);
    const newBias = new Float32Array(w.shape[0]);
    for (let o = 0; o < w.shape[0]; o++) {
      for (let i = 0; i < perChannel; i++) {
        weight[o * perChannel + i] = w.data[o * perChannel + i] * scale[o];
      }
      newBias[o] = (bias?.[o] ?? 0) * scale[o] + offset[o];
    }
    weights.set(`${node.name}/folded_weight`, { shape: w.shape, data: weight });
    weights.set(`${node.name}/folded_bias`, { shape: [w.shape[0]], data: newBias });
    folded.add(conv.name);
    nodes.push({
      ...conv,
      name: node.name,
      weight: `${node.name}/folded_weight`,
      bias: `${node.name}/folded_bias`,
      activation: node.activation,
    });
  }
  return { ...graph, nodes: nodes.filter((node) => !folded.has(node.name)), weights };
}

function requireWeight(graph: BackboneGraph, name: string, node: string): GraphWeight {
  const weight = graph.weights.get(name);
  if (!weight) throw new Error(`${graph.name}: node "${node}" needs weight "${name}", not found`);
  return weight;
}

function fusedActivation(activation: GraphActivation): FusedActivation | undefined {
  return activation === "relu" ? { kind: "relu" } : undefined;
}

/** Applies what a fused activation could not (ReLU6's upper clamp, or all of it). */
function finishActivation(x: Tensor, activation: GraphActivation, fused: boolean): Tensor {
  if (activation === "relu6") return op.clamp(x, 0, 6);
  if (activation === "relu" && !fused) return op.relu(x);
  return x;
}

/** [top, bottom, left, right] padding of a window op on x for the graph's padding mode. */
function windowPads(
  x: Tensor,
  padding: GraphPadding,
  window: [number, number],
  stride: [number, number],
): [number, number, number, number] {
  if (padding === "valid") return [0, 0, 0, 0];
  if (padding !== "same") return [padding[0], padding[0], padding[1], padding[1]];
  // TensorFlow puts the odd row or column of "same" padding at the bottom and right.
  const rows = samePadding(x.shape[2], window[0], stride[0], 1);
  const columns = samePadding(x.shape[3], window[1], stride[1], 1);
  const top = Math.floor(rows / 2), left = Math.floor(columns / 2);
  return [top, rows - top, left, columns - left];
}

/** A pretrained network on the GPU, with its weights uploaded once. */
export class Backbone {
  /** The graph being run (batch norms folded into their convolutions). */
  readonly graph: BackboneGraph;
  /** Class names by output index, when known. */
  readonly labels?: readonly string[];
  private readonly weights = new Map<string, Tensor>();
  private readonly byName: Map<string, GraphNode>;

  private constructor(graph: BackboneGraph, labels?: readonly string[]) {
    this.graph = foldBatchNorms(graph);
    this.labels = labels;
    this.byName = new Map(this.graph.nodes.map((node) => [node.name, node]));
    for (const [name, weight] of this.graph.weights) {
      if (this.graph.nodes.some((node) => referencesWeight(node, name))) {
        // Dense weights are stored [out, in]; the product wants [in, out].
        const dense = this.graph.nodes.find((n) => n.kind === "dense" && n.weight === name);
        const uploaded = dense
          ? keep(op.transpose(tensor(weight.data, weight.shape)))
          : keep(tensor(weight.data, weight.shape));
        this.weights.set(name, uploaded);
      }
    }
  }

  /** Acquires the GPU and uploads the graph's weights. */
  static async create(graph: BackboneGraph, labels?: readonly string[]): Promise<Backbone> {
    await init();
    return noGrad(() => tidy(() => new Backbone(graph, labels)));
  }

  /** The feature layers this network offers ("layer1", …), in order. */
  get featureLayerNames(): string[] {
    return Object.keys(this.graph.featureLayers);
  }

  /**
   * The network input for RGB (or grayscale, triplicated) images in [0, 1], [N, 1|3, H, W]:
   * scaled to 0–255, channels reordered and normalised as the network was trained, in one 1×1
   * convolution.
   */
  preprocess(images: Tensor): Tensor {
    const channels = images.shape[1];
    if (images.shape.length !== 4 || (channels !== 1 && channels !== 3)) {
      throw new Error(
        `${this.graph.name}: expected images [N, 1 or 3, H, W], got [${images.shape}]`,
      );
    }
    const { channelOrder, mean, std } = this.graph.preprocessing;
    const weight = new Float32Array(3 * channels);
    const bias = new Float32Array(3);
    for (let out = 0; out < 3; out++) {
      const rgb = channelOrder === "bgr" ? 2 - out : out;
      weight[out * channels + (channels === 1 ? 0 : rgb)] = 255 / std[out];
      bias[out] = -mean[out] / std[out];
    }
    const grid = this.graph.inputQuantization;
    return noGrad(() =>
      tidy(() => {
        const input = op.conv2d(images, tensor(weight, [3, channels, 1, 1]), tensor(bias, [3]));
        // A quantized model sees whole 0–255 pixel values.
        return grid ? op.fakeQuantize(input, grid.scale, grid.zeroPoint) : input;
      })
    );
  }

  /**
   * Runs the network on images in [0, 1] ([N, 1|3, H, W]) as far as the requested layers need,
   * and returns those layers' outputs by the names asked for: friendly feature-layer names
   * ("layer2") or node names. The caller owns (and disposes) the returned tensors.
   */
  features(images: Tensor, layers: readonly string[]): Record<string, Tensor> {
    const targets = new Map<string, string>();
    for (const layer of layers) {
      const node = this.graph.featureLayers[layer] ?? layer;
      if (!this.byName.has(node)) {
        throw new Error(
          `${this.graph.name} has no layer "${layer}" (feature layers: ` +
            `${this.featureLayerNames.join(", ") || "none"}; or a node name)`,
        );
      }
      targets.set(layer, node);
    }
    return noGrad(() => this.run(this.preprocess(images), new Set(targets.values()), targets));
  }

  /**
   * The top-k classes of one image, resized to the network's input size with Pillow's default
   * (antialiased bicubic) filter, as the models' reference pipelines do.
   */
  async classify(image: FloatImage, k = 5): Promise<Prediction[]> {
    const probabilities = this.graph.probabilities;
    if (!probabilities) throw new Error(`${this.graph.name} has no classification head`);
    const [height, width] = this.graph.inputSize;
    const rgb = resize(convertChannels(image, 3), width, height, "bicubic");
    const input = tensor(rgb.data, [1, 3, height, width]);
    const out = this.features(input, [probabilities])[probabilities];
    input.dispose();
    const values = await out.toArray();
    out.dispose();
    if (this.labels && this.labels.length !== values.length) {
      throw new Error(
        `${this.graph.name}: ${this.labels.length} labels for ${values.length} classes`,
      );
    }
    return [...values.keys()]
      .sort((a, b) => values[b] - values[a])
      .slice(0, k)
      .map((index) => ({
        index,
        label: this.labels?.[index] ?? `class ${index}`,
        probability: values[index],
      }));
  }

  /** Frees the uploaded weights. */
  dispose(): void {
    for (const weight of this.weights.values()) weight.dispose();
    this.weights.clear();
  }

  /**
   * Evaluates the nodes the targets depend on, in order, freeing each result after its last
   * reader; `input` is consumed.
   */
  private run(
    input: Tensor,
    targetNodes: Set<string>,
    targets: Map<string, string>,
  ): Record<string, Tensor> {
    const needed = this.ancestors(targetNodes);
    const readers = new Map<string, number>();
    for (const node of this.graph.nodes) {
      if (!needed.has(node.name)) continue;
      for (const name of node.inputs) readers.set(name, (readers.get(name) ?? 0) + 1);
    }
    const values = new Map<string, Tensor>([[GRAPH_INPUT, input]]);
    const release = (name: string) => {
      const left = (readers.get(name) ?? 0) - 1;
      readers.set(name, left);
      if (left <= 0 && !targetNodes.has(name)) {
        values.get(name)?.dispose();
        values.delete(name);
      }
    };
    for (const node of this.graph.nodes) {
      if (!needed.has(node.name)) continue;
      const inputs = node.inputs.map((name) => {
        const value = values.get(name);
        if (!value) {
          throw new Error(`${this.graph.name}: node "${node.name}" reads "${name}" first`);
        }
        return value;
      });
      const exact = this.evaluate(node, inputs);
      const result = node.quantization
        ? op.fakeQuantize(exact, node.quantization.scale, node.quantization.zeroPoint)
        : exact;
      if (result !== exact) exact.dispose();
      // An identity (an activation "none") hands back its input: a view keeps it alive when the
      // input itself is freed.
      values.set(node.name, inputs.includes(result) ? result.view(result.shape) : result);
      node.inputs.forEach(release);
    }
    if (!targetNodes.has(GRAPH_INPUT)) values.get(GRAPH_INPUT)?.dispose();
    const result: Record<string, Tensor> = {};
    for (const [layer, node] of targets) result[layer] = values.get(node)!;
    return result;
  }

  /** The named nodes and every node they read from, transitively. */
  private ancestors(names: Set<string>): Set<string> {
    const needed = new Set<string>();
    const pending = [...names];
    while (pending.length > 0) {
      const name = pending.pop()!;
      if (needed.has(name) || name === GRAPH_INPUT) continue;
      needed.add(name);
      pending.push(...this.byName.get(name)!.inputs);
    }
    return needed;
  }

  private weight(name: string): Tensor {
    const weight = this.weights.get(name);
    if (!weight) throw new Error(`${this.graph.name}: weight "${name}" is missing`);
    return weight;
  }

  /** One node's result from its inputs. */
  private evaluate(node: GraphNode, inputs: Tensor[]): Tensor {
    const [x] = inputs;
    return tidy(() => {
      switch (node.kind) {
        case "conv2d": {
          const fused = fusedActivation(node.activation);
          const y = op.conv2d(
            x,
            this.weight(node.weight),
            node.bias ? this.weight(node.bias) : undefined,
            {
              stride: node.stride,
              padding: node.padding,
              dilation: node.dilation,
              groups: node.groups,
              activation: fused,
            },
          );
          return finishActivation(y, node.activation, fused !== undefined);
        }
        case "dense": {
          const product = op.matmul(x, this.weight(node.weight));
          const y = node.bias ? op.add(product, this.weight(node.bias)) : product;
          return finishActivation(y, node.activation, false);
        }
        case "channelAffine": {
          const perChannel = [1, x.shape[1], 1, 1];
          const scaled = op.mul(x, op.reshape(this.weight(node.scale), perChannel));
          const y = op.add(scaled, op.reshape(this.weight(node.offset), perChannel));
          return finishActivation(y, node.activation, false);
        }
        case "add":
          return finishActivation(
            inputs.reduce((sum, t) => op.add(sum, t)),
            node.activation,
            false,
          );
        case "activation":
          return finishActivation(x, node.activation, false);
        case "pad": {
          const [top, bottom, left, right] = node.pads;
          return op.pad(x, [[0, 0], [0, 0], [top, bottom], [left, right]]);
        }
        case "maxPool":
        case "avgPool":
          return this.pool(node.kind, x, node.window, node.stride, node.padding);
        case "globalAvgPool":
          return op.mean(x, [2, 3]);
        case "flatten":
          // The models were trained channels-last, so features flatten in (H, W, C) order.
          return x.shape.length === 4
            ? op.reshape(op.permute(x, [0, 2, 3, 1]), [x.shape[0], -1])
            : op.reshape(x, [x.shape[0], -1]);
        case "softmax": {
          const shifted = op.exp(op.sub(x, op.max(x, [-1], true)));
          return op.div(shifted, op.sum(shifted, [-1], true));
        }
      }
    });
  }

  /**
   * Max or average pooling with TensorFlow's padding: padded cells never win a max, and an
   * average covers only the cells inside the image.
   */
  private pool(
    kind: "maxPool" | "avgPool",
    x: Tensor,
    window: [number, number],
    stride: [number, number],
    padding: GraphPadding,
  ): Tensor {
    const [top, bottom, left, right] = windowPads(x, padding, window, stride);
    const unpadded = top === 0 && bottom === 0 && left === 0 && right === 0;
    if (kind === "maxPool") {
      const padded = unpadded
        ? x
        : op.pad(x, [[0, 0], [0, 0], [top, bottom], [left, right]], -3.4e38);
      return op.maxPool2d(padded, window, { stride });
    }
    if (unpadded) return op.avgPool2d(x, window, { stride });
    const pads: [number, number][] = [[0, 0], [0, 0], [top, bottom], [left, right]];
    const sums = op.avgPool2d(op.pad(x, pads), window, { stride });
    const inside = op.avgPool2d(op.pad(op.ones([1, 1, x.shape[2], x.shape[3]]), pads), window, {
      stride,
    });
    return op.div(sums, inside);
  }
}

function referencesWeight(node: GraphNode, name: string): boolean {
  switch (node.kind) {
    case "conv2d":
    case "dense":
      return node.weight === name || node.bias === name;
    case "channelAffine":
      return node.scale === name || node.offset === name;
    default:
      return false;
  }
}
