/**
 * A {@link BackboneGraph} as one safetensors file: the weights are its tensors, and the rest
 * (nodes, input size, preprocessing, probabilities, feature layers, name, and optionally the
 * class labels) are JSON strings in its metadata, so that a converted backbone loads without the
 * file it came from. Python's safetensors reads the weights as they are.
 *
 * Metadata keys: `format` ({@link GRAPH_FILE_FORMAT}), `version` ("1"), `name`, `nodes`,
 * `inputSize`, `preprocessing`, `featureLayers`, and when present `probabilities` (a node name)
 * and `labels` (a JSON list of class names, in class-index order).
 *
 * @module
 */

import { CheckpointError, encodeSafetensors, loadSafetensors } from "../checkpoint.ts";
import { jsonForMessage, writeFileAtomic } from "../../util/fs.ts";
import {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphNode,
  type GraphOp,
  type GraphWeight,
  ModelFormatError,
} from "./graph.ts";

/** The `format` metadata value that marks a backbone graph file. */
export const GRAPH_FILE_FORMAT = "anodet-backbone-graph";
const VERSION = "1";

/** A graph read from a file, with the class labels stored beside it. */
export interface StoredGraph {
  graph: BackboneGraph;
  /** Class names in class-index order, when the file holds them. */
  labels?: string[];
}

/**
 * Saves a graph (and optionally its class labels) as a safetensors file, atomically.
 *
 * @param graph the graph; it is checked first, so that a file that would not load is not written
 * @param path the target file (its folder is created)
 * @param labels class names in class-index order
 * @throws Error when the graph is inconsistent or the file cannot be written
 */
export async function saveGraph(
  graph: BackboneGraph,
  path: string,
  labels?: string[],
): Promise<void> {
  checkGraph(
    graph,
    labels,
    (problem) => new Error(`Cannot save graph "${graph.name}": ${problem}`),
  );
  const metadata: Record<string, string> = {
    format: GRAPH_FILE_FORMAT,
    version: VERSION,
    name: graph.name,
    nodes: JSON.stringify(graph.nodes),
    inputSize: JSON.stringify(graph.inputSize),
    preprocessing: JSON.stringify(graph.preprocessing),
    featureLayers: JSON.stringify(graph.featureLayers),
  };
  if (graph.probabilities !== undefined) metadata.probabilities = graph.probabilities;
  if (labels) metadata.labels = JSON.stringify(labels);
  await writeFileAtomic(path, encodeSafetensors(graph.weights, metadata));
}

/**
 * Loads a graph saved by {@link saveGraph}.
 *
 * @param path the file
 * @returns the graph and, when stored, its labels
 * @throws ModelFormatError naming `path` for a missing or foreign file, bad metadata JSON, or a
 *   node that references a weight or node the file does not hold
 */
export async function loadGraph(path: string): Promise<StoredGraph> {
  const fail = (problem: string) => new ModelFormatError(path, problem);
  let contents;
  try {
    contents = await loadSafetensors(path);
  } catch (error) {
    if (!(error instanceof CheckpointError)) throw error;
    // The checkpoint reader's message is "<path>: <problem>"; keep the problem only.
    throw fail(error.message.slice(error.message.indexOf(": ") + 2));
  }
  const { tensors, metadata } = contents;
  if (metadata.format !== GRAPH_FILE_FORMAT) {
    throw fail(
      `not a backbone graph file (its metadata has no "format": "${GRAPH_FILE_FORMAT}"; a ` +
        "checkpoint or another tool's safetensors?)",
    );
  }
  if (metadata.version !== VERSION) {
    throw fail(`graph file version ${metadata.version}, this anodet reads version ${VERSION}`);
  }
  const json = (key: string, optional = false): unknown => {
    const text = metadata[key];
    if (text === undefined) {
      if (optional) return undefined;
      throw fail(`the metadata lacks "${key}"`);
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw fail(`the metadata "${key}" is not valid JSON (${(error as Error).message})`);
    }
  };
  const graph = {
    name: metadata.name,
    nodes: json("nodes"),
    weights: tensors as Map<string, GraphWeight>,
    inputSize: json("inputSize"),
    preprocessing: json("preprocessing"),
    ...(metadata.probabilities !== undefined ? { probabilities: metadata.probabilities } : {}),
    featureLayers: json("featureLayers"),
  } as BackboneGraph;
  const labels = json("labels", true) as string[] | undefined;
  checkGraph(graph, labels, fail);
  return labels ? { graph, labels } : { graph };
}

/** The weight fields and the other fields each kind of node has. */
const NODE_FIELDS: Record<
  GraphOp["kind"],
  { weights: string[]; optional?: string; params: string[] }
> = {
  conv2d: {
    weights: ["weight"],
    optional: "bias",
    params: ["stride", "padding", "dilation", "groups", "activation"],
  },
  dense: { weights: ["weight"], optional: "bias", params: ["activation"] },
  channelAffine: { weights: ["scale", "offset"], params: ["activation"] },
  add: { weights: [], params: ["activation"] },
  activation: { weights: [], params: ["activation"] },
  pad: { weights: [], params: ["pads"] },
  maxPool: { weights: [], params: ["window", "stride", "padding"] },
  avgPool: { weights: [], params: ["window", "stride", "padding"] },
  globalAvgPool: { weights: [], params: [] },
  flatten: { weights: [], params: [] },
  softmax: { weights: [], params: [] },
};

/**
 * Checks what a file's reader relies on: every node of a known kind with its fields, inputs that
 * name earlier nodes, weights that exist, and feature layers and probabilities naming nodes.
 */
function checkGraph(
  graph: BackboneGraph,
  labels: unknown,
  fail: (problem: string) => Error,
): void {
  if (typeof graph.name !== "string" || graph.name === "") throw fail("the graph has no name");
  const size = graph.inputSize as unknown;
  if (
    !Array.isArray(size) || size.length !== 2 || !size.every((n) => Number.isInteger(n) && n > 0)
  ) {
    throw fail(`inputSize is ${jsonForMessage(size)}, expected [height, width]`);
  }
  const pre = graph.preprocessing as unknown as Record<string, unknown> | null;
  const triple = (value: unknown) =>
    Array.isArray(value) && value.length === 3 && value.every((n) => Number.isFinite(n));
  if (
    typeof pre !== "object" || pre === null ||
    (pre.channelOrder !== "rgb" && pre.channelOrder !== "bgr") || !triple(pre.mean) ||
    !triple(pre.std) || (pre.std as number[]).includes(0)
  ) {
    throw fail(
      `preprocessing is ${jsonForMessage(pre)}, expected { channelOrder: "rgb" | "bgr", ` +
        "mean: [3 numbers], std: [3 non-zero numbers] }",
    );
  }
  if (!Array.isArray(graph.nodes)) throw fail("nodes is not a list");
  const defined = new Set([GRAPH_INPUT]);
  for (const [index, node] of (graph.nodes as unknown[]).entries()) {
    const problem = nodeProblem(node, defined, graph.weights);
    if (problem) {
      throw fail(`node ${index} (${jsonForMessage((node as GraphNode)?.name)}) ${problem}`);
    }
    defined.add((node as GraphNode).name);
  }
  const named = (name: unknown) =>
    typeof name === "string" && name !== GRAPH_INPUT && defined.has(name);
  if (graph.probabilities !== undefined && !named(graph.probabilities)) {
    throw fail(`probabilities names "${graph.probabilities}", which is no node`);
  }
  const features = graph.featureLayers as unknown;
  if (typeof features !== "object" || features === null || Array.isArray(features)) {
    throw fail("featureLayers is not an object of layer names → node names");
  }
  for (const [layer, node] of Object.entries(features)) {
    if (!named(node)) {
      throw fail(`feature layer ${layer} names ${jsonForMessage(node)}, which is no node`);
    }
  }
  if (
    labels !== undefined && (!Array.isArray(labels) || !labels.every((l) => typeof l === "string"))
  ) {
    throw fail("labels is not a list of class names");
  }
}

/** What is wrong with one node, or undefined. */
function nodeProblem(
  node: unknown,
  defined: Set<string>,
  weights: ReadonlyMap<string, GraphWeight>,
): string | undefined {
  if (typeof node !== "object" || node === null) return "is not an object";
  const fields = node as Record<string, unknown>;
  if (typeof fields.name !== "string" || fields.name === "") return "has no name";
  if (defined.has(fields.name)) return "repeats an earlier name";
  const spec = typeof fields.kind === "string" && Object.hasOwn(NODE_FIELDS, fields.kind)
    ? NODE_FIELDS[fields.kind as GraphOp["kind"]]
    : undefined;
  if (!spec) {
    return `has kind ${jsonForMessage(fields.kind)} (known: ${
      Object.keys(NODE_FIELDS).join(", ")
    })`;
  }
  const inputs = fields.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0) return "has no inputs list";
  const unknown = inputs.find((input) => !defined.has(input));
  if (unknown !== undefined) return `takes ${jsonForMessage(unknown)}, which no earlier node is`;
  const missingParam = spec.params.find((param) => fields[param] === undefined);
  if (missingParam) return `(${fields.kind}) lacks "${missingParam}"`;
  const referenced = [
    ...spec.weights,
    ...(spec.optional && fields[spec.optional] !== undefined ? [spec.optional] : []),
  ];
  for (const field of referenced) {
    const weight = fields[field];
    if (typeof weight !== "string" || !weights.has(weight)) {
      return `(${fields.kind}) uses ${field} ${
        jsonForMessage(weight)
      }, but there is no such weight`;
    }
  }
}
