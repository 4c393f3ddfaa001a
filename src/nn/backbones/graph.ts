/**
 * The graph form every pretrained backbone is read into, whatever file it came from (a TF.js
 * layers model, a TFLite FlatBuffer): a list of nodes in execution order, each naming its inputs
 * by the names of earlier nodes, and the weights already in this engine's layout and in float32.
 * Readers produce it; {@link ./runner.ts} runs it on the GPU.
 */

import { InputError } from "../../util/errors.ts";

/** An activation a node applies to its result. */
export type GraphActivation = "none" | "relu" | "relu6";

/** Padding of a convolution or pooling window: per side sizes [rows, columns], or TF's modes. */
export type GraphPadding = [number, number] | "same" | "valid";

/** One operation. `inputs` are names of earlier nodes or of the graph input. */
export type GraphOp =
  | {
    /** 2-D convolution; weight [cout, cin/groups, kh, kw], bias [cout]. */
    kind: "conv2d";
    weight: string;
    bias?: string;
    stride: [number, number];
    padding: GraphPadding;
    dilation: [number, number];
    groups: number;
    activation: GraphActivation;
  }
  | {
    /** Fully connected layer on [N, in]; weight [out, in], bias [out]. */
    kind: "dense";
    weight: string;
    bias?: string;
    activation: GraphActivation;
  }
  | {
    /** Inference-time batch norm, as a per-channel y = x·scale + offset ([C] each). */
    kind: "channelAffine";
    scale: string;
    offset: string;
    activation: GraphActivation;
  }
  /** Elementwise sum of the inputs (same shapes). */
  | { kind: "add"; activation: GraphActivation }
  /** The activation alone. */
  | { kind: "activation"; activation: GraphActivation }
  /** Zero padding of the spatial sides: [top, bottom, left, right]. */
  | { kind: "pad"; pads: [number, number, number, number] }
  /** Max or average pooling (average excludes padded cells, as TensorFlow does). */
  | {
    kind: "maxPool" | "avgPool";
    window: [number, number];
    stride: [number, number];
    padding: GraphPadding;
  }
  /** Mean over the spatial axes: [N, C, H, W] → [N, C]. */
  | { kind: "globalAvgPool" }
  /** Flattens everything after the batch axis: → [N, features]. */
  | { kind: "flatten" }
  /** Softmax over the last axis of [N, classes]. */
  | { kind: "softmax" };

/** One node: an operation, its inputs and the name its result goes by. */
export type GraphNode = GraphOp & {
  /** Unique name; later nodes and feature requests refer to it. */
  name: string;
  /** Names of the input nodes (the graph input is called {@link GRAPH_INPUT}). */
  inputs: string[];
  /**
   * For quantized models: the 8-bit grid the file stores this result on (real = scale·(q −
   * zeroPoint), q ∈ [0, 255]). Rounding each result to it reproduces the model's own outputs.
   */
  quantization?: { scale: number; zeroPoint: number };
};

/** The name nodes use for the graph's input image batch [N, 3, H, W]. */
export const GRAPH_INPUT = "input";

/** A weight in row-major order, float32, in this engine's layout. */
export interface GraphWeight {
  shape: number[];
  data: Float32Array;
}

/**
 * How an RGB image in [0, 1] becomes the network's input: scaled to [0, 255], channels put in
 * `channelOrder`, then (x − mean) / std per channel (mean and std in that order, 0–255 scale).
 */
export interface Preprocessing {
  channelOrder: "rgb" | "bgr";
  mean: [number, number, number];
  std: [number, number, number];
}

/**
 * The largest input side a model file may declare. ImageNet backbones take 192–600 pixels; a
 * declared side beyond this is a broken file, and `classify` would resize images to it.
 */
export const MAX_MODEL_INPUT_SIDE = 4096;

/** A network ready to run: nodes in execution order, weights, and how to feed it. */
export interface BackboneGraph {
  /** For messages and run configs, e.g. "resnet50". */
  name: string;
  nodes: GraphNode[];
  weights: Map<string, GraphWeight>;
  /** The input size the network was trained at ([height, width]). */
  inputSize: [number, number];
  preprocessing: Preprocessing;
  /** For quantized models: the 8-bit grid of the input, as {@link GraphNode.quantization}. */
  inputQuantization?: { scale: number; zeroPoint: number };
  /** The node whose result is the class probabilities [N, classes], if the graph has a head. */
  probabilities?: string;
  /** Friendly names of feature layers ("layer1", "layer2", …) → node names. */
  featureLayers: Record<string, string>;
}

/** Thrown for a model file that cannot be read; the message names the file and what is wrong. */
export class ModelFormatError extends InputError {
  /** `path` is the file, `problem` what was found against what was expected. */
  constructor(readonly path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = "ModelFormatError";
  }
}
