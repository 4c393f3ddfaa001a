/**
 * Every graph op the backbone runner evaluates, checked against a float64 CPU reference on small
 * random tensors, plus batch-norm folding, preprocessing and the runner's errors.
 */

import assert from "node:assert/strict";
import { Backbone, foldBatchNorms } from "../../../src/nn/backbones/runner.ts";
import {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphActivation,
  type GraphNode,
  type GraphWeight,
} from "../../../src/nn/backbones/graph.ts";
import { tensor } from "../../../src/tensor/tensor.ts";
import {
  addChannelBiasRef,
  binaryRef,
  conv2dRef,
  mapRef,
  matmulRef,
  randomRef,
  type Ref,
  relativeError,
  seededRandom,
} from "../../tensor/reference.ts";

const random = seededRandom(12);

function weight(shape: number[], low = -1, high = 1): GraphWeight {
  const ref = randomRef(shape, random, low, high);
  return { shape, data: Float32Array.from(ref.data) };
}

function asRef(w: GraphWeight): Ref {
  return { data: Float64Array.from(w.data), shape: w.shape };
}

function activateRef(x: Ref, activation: GraphActivation): Ref {
  if (activation === "relu") return mapRef(x, (v) => Math.max(v, 0));
  if (activation === "relu6") return mapRef(x, (v) => Math.min(Math.max(v, 0), 6));
  return x;
}

/** Explicit zero (or `value`) padding of the spatial sides. */
function padRef(x: Ref, [top, bottom, left, right]: number[], value = 0): Ref {
  const [n, c, h, w] = x.shape;
  const oh = h + top + bottom, ow = w + left + right;
  const data = new Float64Array(n * c * oh * ow).fill(value);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        data[(p * oh + y + top) * ow + xx + left] = x.data[(p * h + y) * w + xx];
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

/** TensorFlow's "same" split: [top, bottom, left, right], the odd cell at the end. */
function samePads(h: number, w: number, k: [number, number], s: [number, number]): number[] {
  const total = (size: number, kk: number, ss: number) =>
    Math.max((Math.ceil(size / ss) - 1) * ss + kk - size, 0);
  const th = total(h, k[0], s[0]), tw = total(w, k[1], s[1]);
  return [Math.floor(th / 2), th - Math.floor(th / 2), Math.floor(tw / 2), tw - Math.floor(tw / 2)];
}

/** Pooling over windows that may hang over the border; averages count inside cells only. */
function poolRef(
  x: Ref,
  kind: "maxPool" | "avgPool",
  k: [number, number],
  s: [number, number],
  pads: number[],
): Ref {
  const [n, c, h, w] = x.shape;
  const [top, bottom, left, right] = pads;
  const oh = Math.floor((h + top + bottom - k[0]) / s[0]) + 1;
  const ow = Math.floor((w + left + right - k[1]) / s[1]) + 1;
  const data = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        let acc = kind === "maxPool" ? -Infinity : 0, count = 0;
        for (let ky = 0; ky < k[0]; ky++) {
          for (let kx = 0; kx < k[1]; kx++) {
            const iy = y * s[0] - top + ky, ix = xx * s[1] - left + kx;
            if (iy < 0 || ix < 0 || iy >= h || ix >= w) continue;
            const v = x.data[(p * h + iy) * w + ix];
            acc = kind === "maxPool" ? Math.max(acc, v) : acc + v;
            count++;
          }
        }
        data[(p * oh + y) * ow + xx] = kind === "maxPool" ? acc : acc / count;
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

/** The float64 meaning of one node, written independently of the runner. */
function evaluateRef(node: GraphNode, inputs: Ref[], weights: Map<string, GraphWeight>): Ref {
  const [x] = inputs;
  const w = (name: string) => asRef(weights.get(name)!);
  switch (node.kind) {
    case "conv2d": {
      let padded = x;
      let padding = 0;
      if (node.padding === "same") {
        const kh = (weights.get(node.weight)!.shape[2] - 1) * node.dilation[0] + 1;
        const kw = (weights.get(node.weight)!.shape[3] - 1) * node.dilation[1] + 1;
        padded = padRef(x, samePads(x.shape[2], x.shape[3], [kh, kw], node.stride));
      } else if (node.padding !== "valid") padding = node.padding[0];
      let y = conv2dRef(padded, w(node.weight), {
        stride: node.stride[0],
        padding,
        dilation: node.dilation[0],
        groups: node.groups,
      });
      if (node.bias) y = addChannelBiasRef(y, w(node.bias));
      return activateRef(y, node.activation);
    }
    case "dense": {
      const wt = w(node.weight);
      const [out, inn] = wt.shape;
      const transposed = new Float64Array(out * inn);
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inn; i++) transposed[i * out + o] = wt.data[o * inn + i];
      }
      let y = matmulRef(x, { data: transposed, shape: [inn, out] });
      if (node.bias) y = binaryRef(y, w(node.bias), (a, b) => a + b);
      return activateRef(y, node.activation);
    }
    case "channelAffine": {
      const c = x.shape[1];
      const scale = { data: w(node.scale).data, shape: [1, c, 1, 1] };
      const offset = { data: w(node.offset).data, shape: [1, c, 1, 1] };
      const y = binaryRef(binaryRef(x, scale, (a, b) => a * b), offset, (a, b) => a + b);
      return activateRef(y, node.activation);
    }
    case "add":
      return activateRef(
        inputs.reduce((a, b) => binaryRef(a, b, (u, v) => u + v)),
        node.activation,
      );
    case "activation":
      return activateRef(x, node.activation);
    case "pad":
      return padRef(x, node.pads);
    case "maxPool":
    case "avgPool": {
      const pads = node.padding === "same"
        ? samePads(x.shape[2], x.shape[3], node.window, node.stride)
        : node.padding === "valid"
        ? [0, 0, 0, 0]
        : [node.padding[0], node.padding[0], node.padding[1], node.padding[1]];
      return poolRef(x, node.kind, node.window, node.stride, pads);
    }
    case "globalAvgPool": {
      const [n, c, h, wd] = x.shape;
      const data = new Float64Array(n * c);
      for (let p = 0; p < n * c; p++) {
        for (let i = 0; i < h * wd; i++) data[p] += x.data[p * h * wd + i] / (h * wd);
      }
      return { data, shape: [n, c] };
    }
    case "flatten": {
      const [n, c, h, wd] = x.shape;
      const data = new Float64Array(x.data.length);
      let i = 0;
      for (let b = 0; b < n; b++) {
        for (let y = 0; y < h; y++) {
          for (let xx = 0; xx < wd; xx++) {
            for (let ch = 0; ch < c; ch++) data[i++] = x.data[((b * c + ch) * h + y) * wd + xx];
          }
        }
      }
      return { data, shape: [n, c * h * wd] };
    }
    case "softmax": {
      const [n, k] = x.shape;
      const data = new Float64Array(n * k);
      for (let b = 0; b < n; b++) {
        const row = x.data.subarray(b * k, (b + 1) * k);
        const top = Math.max(...row);
        const sum = row.reduce((s, v) => s + Math.exp(v - top), 0);
        for (let j = 0; j < k; j++) data[b * k + j] = Math.exp(row[j] - top) / sum;
      }
      return { data, shape: [n, k] };
    }
  }
}

/** Runs the whole graph on the CPU in float64, from an already preprocessed input. */
function runRef(graph: BackboneGraph, input: Ref): Map<string, Ref> {
  const values = new Map<string, Ref>([[GRAPH_INPUT, input]]);
  for (const node of graph.nodes) {
    values.set(node.name, evaluateRef(node, node.inputs.map((i) => values.get(i)!), graph.weights));
  }
  return values;
}

/** The identity preprocessing for inputs already in network units: x·255 / 255. */
const IDENTITY = { channelOrder: "rgb", mean: [0, 0, 0], std: [255, 255, 255] } as const;

function graphOf(nodes: GraphNode[], weights: Record<string, GraphWeight>): BackboneGraph {
  return {
    name: "test-graph",
    nodes,
    weights: new Map(Object.entries(weights)),
    inputSize: [8, 8],
    preprocessing: { ...IDENTITY, mean: [...IDENTITY.mean], std: [...IDENTITY.std] },
    featureLayers: {},
  };
}

/** Runs `graph` on a random [n, 3, h, w] input on the GPU and on the CPU; compares `outputs`. */
async function expectGraphMatches(
  graph: BackboneGraph,
  inputShape: number[],
  outputs: string[] = [graph.nodes[graph.nodes.length - 1].name],
): Promise<void> {
  const input = randomRef(inputShape, random);
  const expected = runRef(graph, input);
  const backbone = await Backbone.create(graph);
  const images = tensor(Float32Array.from(input.data), inputShape);
  const actual = backbone.features(images, outputs);
  images.dispose();
  for (const name of outputs) {
    assert.deepEqual(actual[name].shape, expected.get(name)!.shape, `${name}: shape`);
    const error = relativeError(await actual[name].toArray(), expected.get(name)!.data);
    assert.ok(error < 1e-4, `${name}: relative error ${error}`);
    actual[name].dispose();
  }
  backbone.dispose();
}

function node(
  name: string,
  inputs: string[],
  op: Omit<GraphNode, "name" | "inputs"> | GraphNode,
): GraphNode {
  return { ...op, name, inputs } as GraphNode;
}

const convCases: { label: string; input: number[]; w: number[]; op: Partial<GraphNode> }[] = [
  {
    label: "3×3 stride 2 'same' (odd padding at the end) with ReLU6",
    input: [2, 3, 8, 7],
    w: [4, 3, 3, 3],
    op: { stride: [2, 2], padding: "same", activation: "relu6" },
  },
  {
    label: "1×1 'valid' with ReLU",
    input: [1, 3, 5, 5],
    w: [6, 3, 1, 1],
    op: { padding: "valid", activation: "relu" },
  },
  {
    label: "7×7 stride 2 explicit padding",
    input: [1, 3, 11, 11],
    w: [5, 3, 7, 7],
    op: { stride: [2, 2], padding: [3, 3] },
  },
  {
    label: "depthwise 3×3 with channel multiplier 2",
    input: [1, 3, 6, 6],
    w: [6, 1, 3, 3],
    op: { padding: "same", groups: 3, activation: "relu6" },
  },
  {
    label: "dilated 3×3",
    input: [1, 3, 9, 9],
    w: [2, 3, 3, 3],
    op: { padding: "same", dilation: [2, 2] },
  },
];

for (const c of convCases) {
  Deno.test(`graph conv2d ${c.label} matches the float64 reference`, async () => {
    const conv = node("conv", [GRAPH_INPUT], {
      kind: "conv2d",
      weight: "w",
      bias: "b",
      stride: [1, 1],
      padding: "valid",
      dilation: [1, 1],
      groups: 1,
      activation: "none",
      ...c.op,
    } as GraphNode);
    // Scaled so that ReLU6 clips some outputs at both ends.
    await expectGraphMatches(
      graphOf([conv], { w: weight(c.w, -2, 2), b: weight([c.w[0]]) }),
      c.input,
    );
  });
}

Deno.test("graph dense, flatten (channels-last order) and softmax match the float64 reference", async () => {
  const nodes = [
    node("flat", [GRAPH_INPUT], { kind: "flatten" }),
    node("fc", ["flat"], { kind: "dense", weight: "w", bias: "b", activation: "relu6" }),
    node("logits", ["fc"], { kind: "dense", weight: "w2", activation: "none" }),
    node("probs", ["logits"], { kind: "softmax" }),
  ];
  const graph = graphOf(nodes, {
    w: weight([10, 3 * 2 * 3], -2, 2),
    b: weight([10]),
    w2: weight([7, 10]),
  });
  await expectGraphMatches(graph, [2, 3, 2, 3], ["flat", "fc", "probs"]);
});

Deno.test("graph channelAffine, add and activations match the float64 reference", async () => {
  const nodes = [
    node("bn", [GRAPH_INPUT], {
      kind: "channelAffine",
      scale: "s",
      offset: "o",
      activation: "relu",
    }),
    node("sum", ["bn", GRAPH_INPUT], { kind: "add", activation: "relu6" }),
    node("act", ["sum"], { kind: "activation", activation: "relu" }),
  ];
  const graph = graphOf(nodes, { s: weight([3], -4, 4), o: weight([3], -2, 2) });
  await expectGraphMatches(graph, [2, 3, 4, 5], ["bn", "sum", "act"]);
});

Deno.test("graph pad, pools (TensorFlow 'same') and global average match the float64 reference", async () => {
  const nodes = [
    node("padded", [GRAPH_INPUT], { kind: "pad", pads: [1, 2, 0, 3] }),
    node("max_same", [GRAPH_INPUT], {
      kind: "maxPool",
      window: [3, 3],
      stride: [2, 2],
      padding: "same",
    }),
    node("avg_same", [GRAPH_INPUT], {
      kind: "avgPool",
      window: [3, 3],
      stride: [2, 2],
      padding: "same",
    }),
    node("max_valid", ["padded"], {
      kind: "maxPool",
      window: [2, 2],
      stride: [2, 2],
      padding: "valid",
    }),
    node("avg_valid", [GRAPH_INPUT], {
      kind: "avgPool",
      window: [2, 3],
      stride: [1, 2],
      padding: "valid",
    }),
    node("gap", [GRAPH_INPUT], { kind: "globalAvgPool" }),
  ];
  await expectGraphMatches(graphOf(nodes, {}), [2, 3, 8, 7], [
    "padded",
    "max_same",
    "avg_same",
    "max_valid",
    "avg_valid",
    "gap",
  ]);
});

Deno.test("batch norms fold into the convolution they follow, with the same results", async () => {
  const nodes = [
    node("conv", [GRAPH_INPUT], {
      kind: "conv2d",
      weight: "w",
      bias: "b",
      stride: [1, 1],
      padding: "same",
      dilation: [1, 1],
      groups: 1,
      activation: "none",
    }),
    node("bn", ["conv"], { kind: "channelAffine", scale: "s", offset: "o", activation: "relu" }),
    // A second reader of a convolution keeps that one unfolded.
    node("conv2", ["bn"], {
      kind: "conv2d",
      weight: "w2",
      stride: [1, 1],
      padding: "valid",
      dilation: [1, 1],
      groups: 1,
      activation: "none",
    }),
    node("bn2", ["conv2"], {
      kind: "channelAffine",
      scale: "s2",
      offset: "o2",
      activation: "none",
    }),
    node("sum", ["bn2", "conv2"], { kind: "add", activation: "none" }),
  ];
  const graph = graphOf(nodes, {
    w: weight([4, 3, 3, 3]),
    b: weight([4]),
    s: weight([4], 0.5, 2),
    o: weight([4]),
    w2: weight([4, 4, 1, 1]),
    s2: weight([4], 0.5, 2),
    o2: weight([4]),
  });
  const folded = foldBatchNorms(graph);
  assert.deepEqual(folded.nodes.map((n) => `${n.name}:${n.kind}`), [
    "bn:conv2d",
    "conv2:conv2d",
    "bn2:channelAffine",
    "sum:add",
  ]);
  await expectGraphMatches(graph, [1, 3, 6, 6], ["bn", "sum"]);
});

Deno.test("preprocessing scales to 0–255, reorders to BGR, normalises, and triplicates grayscale", async () => {
  const graph = graphOf(
    [node("id", [GRAPH_INPUT], { kind: "activation", activation: "none" })],
    {},
  );
  graph.preprocessing = { channelOrder: "bgr", mean: [100, 110, 120], std: [2, 4, 8] };
  const backbone = await Backbone.create(graph);
  const rgb = [0.1, 0.5, 0.9];
  const images = tensor(rgb, [1, 3, 1, 1]);
  const bgr = await backbone.features(images, ["id"]).id.toArray();
  const expected = [0.9, 0.5, 0.1].map((v, c) => (v * 255 - [100, 110, 120][c]) / [2, 4, 8][c]);
  assert.ok(relativeError(bgr, expected) < 1e-5, `BGR ${bgr} against ${expected}`);
  const gray = tensor([0.4], [1, 1, 1, 1]);
  const triplicated = await backbone.features(gray, ["id"]).id.toArray();
  const expectedGray = [0, 1, 2].map((c) => (0.4 * 255 - [100, 110, 120][c]) / [2, 4, 8][c]);
  assert.ok(relativeError(triplicated, expectedGray) < 1e-5);
  images.dispose();
  gray.dispose();
  backbone.dispose();
});

Deno.test("the runner rejects unknown layers and wrongly shaped images, naming what it expected", async () => {
  const graph = graphOf(
    [node("id", [GRAPH_INPUT], { kind: "activation", activation: "relu" })],
    {},
  );
  graph.featureLayers = { layer1: "id" };
  const backbone = await Backbone.create(graph);
  const images = tensor(new Float32Array(2 * 4 * 4), [1, 2, 4, 4]);
  assert.throws(() => backbone.features(images, ["id"]), /expected images \[N, 1 or 3, H, W\]/);
  const rgb = tensor(new Float32Array(3 * 4), [1, 3, 2, 2]);
  assert.throws(
    () => backbone.features(rgb, ["layer9"]),
    /no layer "layer9" \(feature layers: layer1; or a node name\)/,
  );
  const ok = backbone.features(rgb, ["layer1"]);
  assert.deepEqual(ok.layer1.shape, [1, 3, 2, 2]);
  ok.layer1.dispose();
  await assert.rejects(
    () => backbone.classify({ width: 2, height: 2, channels: 3, data: new Float32Array(12) }),
    /has no classification head/,
  );
  images.dispose();
  rgb.dispose();
  backbone.dispose();
});
