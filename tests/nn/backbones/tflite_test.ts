/**
 * The TFLite reader: the shared ImageNet MobileNets read into graphs, dequantization checked
 * against the raw bytes, a small hand-built model for the paths those files do not take
 * (per-channel int8, QUANTIZE/DEQUANTIZE, the int32 operator code field), and clear errors for
 * broken files and unsupported operators.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  GRAPH_INPUT,
  type GraphNode,
  MAX_MODEL_INPUT_SIDE,
  ModelFormatError,
} from "../../../src/nn/backbones/graph.ts";
import { loadTflite, readLabels, readTflite } from "../../../src/nn/backbones/tflite.ts";
import {
  type Fields,
  operatorTable as operator,
  smallTfliteModel as smallModel,
  tensorTable as tensor,
  TensorType,
} from "../../../src/fuzz/tflite_model.ts";

const weightsDir = new URL("../../../../shared/data/weights/", import.meta.url).pathname;
const V1 = join(weightsDir, "mobilenet_v1_0.75_192_quant.tflite");
const V2 = join(weightsDir, "mobilenet_v2_1.0_224_quant.tflite");
const EXTRACTOR = join(weightsDir, "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite");
const LABELS = join(weightsDir, "imagenet_labels.txt");

/**
 * A minimal FlatBuffer walker written apart from the reader's (no bounds checks: it only reads
 * the shared, valid files), so the tests compare the reader against an independent decoding.
 */
function walk(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const deref = (at: number) => at + view.getUint32(at, true);
  const field = (table: number, id: number) => {
    const vtable = table - view.getInt32(table, true);
    if (4 + 2 * id >= view.getUint16(vtable, true)) return 0;
    const offset = view.getUint16(vtable + 4 + 2 * id, true);
    return offset ? table + offset : 0;
  };
  const vector = (table: number, id: number): [number, number] => {
    const at = field(table, id);
    return at ? [deref(at) + 4, view.getUint32(deref(at), true)] : [0, 0];
  };
  const tables = (table: number, id: number) => {
    const [start, n] = vector(table, id);
    return Array.from({ length: n }, (_, i) => deref(start + 4 * i));
  };
  const ints = (table: number, id: number) => {
    const [start, n] = vector(table, id);
    return Array.from({ length: n }, (_, i) => view.getInt32(start + 4 * i, true));
  };
  const root = deref(0);
  const subgraph = tables(root, 2)[0];
  const tensorTables = tables(subgraph, 0);
  const buffers = tables(root, 4).map((buffer) => vector(buffer, 0));
  const tensor = (index: number) => {
    const t = tensorTables[index];
    const [nameAt, nameLength] = vector(t, 3);
    // Absent fields: no quantization, buffer 0 (the empty one).
    const q = field(t, 4) && deref(field(t, 4));
    const [scaleAt, scales] = q ? vector(q, 2) : [0, 0];
    const [zeroAt] = q ? vector(q, 3) : [0];
    const [dataAt, dataLength] = buffers[field(t, 2) && view.getUint32(field(t, 2), true)];
    return {
      name: new TextDecoder().decode(bytes.subarray(nameAt, nameAt + nameLength)),
      shape: ints(t, 0),
      scale: Array.from({ length: scales }, (_, i) => view.getFloat32(scaleAt + 4 * i, true)),
      zeroPoint: Array.from(
        { length: scales },
        (_, i) => Number(view.getBigInt64(zeroAt + 8 * i, true)),
      ),
      data: new DataView(bytes.buffer, bytes.byteOffset + dataAt, dataLength),
    };
  };
  return {
    tensor,
    /** Where the last buffer's data ends. */
    dataEnd: Math.max(...buffers.map(([start, length]) => start + length)),
    tensorCount: tensorTables.length,
    operators: tables(subgraph, 3).map((op) => ({ inputs: ints(op, 1), outputs: ints(op, 2) })),
    /** Where operator `index`'s options table starts. */
    options: (index: number) => deref(field(tables(subgraph, 3)[index], 4)),
    field,
    operatorCodes: tables(root, 1),
  };
}

/** The file's shape of each tensor, by name (node names are output tensor names). */
function shapesByName(bytes: Uint8Array): Map<string, number[]> {
  const file = walk(bytes);
  const shapes = new Map<string, number[]>();
  for (let i = 0; i < file.tensorCount; i++) shapes.set(file.tensor(i).name, file.tensor(i).shape);
  return shapes;
}

function byName(nodes: GraphNode[], name: string): GraphNode {
  return nodes.find((node) => node.name === name) ?? assert.fail(`no node ${name}`);
}

const models = [
  {
    path: V1,
    size: 192,
    nodes: 31,
    kinds: ["avgPool", "conv2d", "flatten", "softmax"],
    firstWeight: [24, 3, 3, 3],
    classifier: [1001, 768, 1, 1],
  },
  {
    path: V2,
    size: 224,
    nodes: 66,
    kinds: ["add", "avgPool", "conv2d", "flatten", "softmax"],
    firstWeight: [32, 3, 3, 3],
    classifier: [1001, 1280, 1, 1],
  },
  {
    path: EXTRACTOR,
    size: 224,
    nodes: 28,
    kinds: ["avgPool", "conv2d"],
    firstWeight: [32, 3, 3, 3],
    classifier: undefined,
  },
];

for (const expected of models) {
  const file = expected.path.split("/").pop()!;
  Deno.test(`${file} reads into a backbone graph`, async () => {
    const graph = await loadTflite(expected.path);
    const bytes = await Deno.readFile(expected.path);
    const shapes = shapesByName(bytes);
    assert.equal(graph.name, file.replace(/\.tflite$/, ""));
    assert.deepEqual(graph.inputSize, [expected.size, expected.size]);
    assert.deepEqual(graph.preprocessing, {
      channelOrder: "rgb",
      mean: [128, 128, 128],
      std: [128, 128, 128],
    });
    assert.equal(graph.nodes.length, expected.nodes);
    assert.deepEqual([...new Set(graph.nodes.map((n) => n.kind))].sort(), expected.kinds);

    // Inputs name earlier nodes; every weight a node names exists, biases match their outputs.
    const seen = new Set([GRAPH_INPUT]);
    for (const node of graph.nodes) {
      for (const input of node.inputs) assert.ok(seen.has(input), `${node.name} reads ${input}`);
      assert.ok(!seen.has(node.name), `${node.name} is unique`);
      seen.add(node.name);
      if (node.kind === "conv2d") {
        const weight = graph.weights.get(node.weight)!;
        const [cout, cinPerGroup] = weight.shape;
        assert.equal(graph.weights.get(node.bias!)!.shape[0], cout);
        const input = node.inputs[0] === GRAPH_INPUT ? [1, 0, 0, 3] : shapes.get(node.inputs[0])!;
        assert.equal(cinPerGroup * node.groups, input[3], node.name);
        assert.equal(weight.data.length, weight.shape.reduce((p, d) => p * d, 1));
      }
    }

    const first = graph.nodes[0];
    assert.ok(first.kind === "conv2d" && first.inputs[0] === GRAPH_INPUT);
    assert.deepEqual(graph.weights.get(first.weight)!.shape, expected.firstWeight);
    assert.deepEqual(first.stride, [2, 2]);
    assert.equal(first.padding, "same");
    assert.equal(first.activation, "relu6");

    if (expected.classifier) {
      const [conv, flatten, softmax] = graph.nodes.slice(-3);
      assert.ok(conv.kind === "conv2d");
      assert.deepEqual(graph.weights.get(conv.weight)!.shape, expected.classifier);
      assert.equal(conv.activation, "none");
      assert.equal(flatten.kind, "flatten");
      assert.deepEqual(shapes.get(flatten.name), [1, 1001]);
      assert.equal(softmax.kind, "softmax");
      assert.equal(graph.probabilities, softmax.name);
    } else {
      // The embedding extractor stops at the pooled features.
      const last = graph.nodes.at(-1)!;
      assert.equal(last.kind, "avgPool");
      assert.deepEqual(shapes.get(last.name), [1, 1, 1, 1024]);
      assert.equal(graph.probabilities, undefined);
    }

    // layer1..4 are the last nodes at strides 4, 8, 16 and 32.
    assert.deepEqual(Object.keys(graph.featureLayers), ["layer1", "layer2", "layer3", "layer4"]);
    const strideOf = (name: string) => {
      const shape = shapes.get(name)!;
      return shape.length === 4 && shape[1] === shape[2] ? expected.size / shape[1] : undefined;
    };
    [4, 8, 16, 32].forEach((stride, i) => {
      const name = graph.featureLayers[`layer${i + 1}`];
      assert.equal(strideOf(name), stride, name);
      const later = graph.nodes.slice(graph.nodes.indexOf(byName(graph.nodes, name)) + 1);
      assert.ok(!later.some((node) => strideOf(node.name) === stride), `${name} is the last`);
    });
  });
}

Deno.test("an explicit name replaces the file name", async () => {
  assert.equal((await loadTflite(V1, "mobilenet")).name, "mobilenet");
});

Deno.test("quantized weights and biases are dequantized as the file's bytes say", async () => {
  const bytes = await Deno.readFile(V1);
  const graph = readTflite(bytes, V1);
  const file = walk(bytes);

  // Operator 0 is a CONV_2D: uint8 OHWI weights with one scale, an int32 bias whose scale is the
  // input's times the weight's.
  const [inputIndex, weightIndex, biasIndex] = file.operators[0].inputs;
  const w = file.tensor(weightIndex);
  assert.equal(w.scale.length, 1, "the file quantizes per tensor");
  const [cout, kh, kw, cin] = w.shape;
  const conv = graph.nodes[0];
  assert.ok(conv.kind === "conv2d");
  const weight = graph.weights.get(conv.weight)!;
  assert.deepEqual(weight.shape, [cout, cin, kh, kw]);
  for (let o = 0; o < cout; o++) {
    for (let i = 0; i < cin; i++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          const q = w.data.getUint8(((o * kh + y) * kw + x) * cin + i);
          const got = weight.data[((o * cin + i) * kh + y) * kw + x];
          assert.equal(got, Math.fround(w.scale[0] * (q - w.zeroPoint[0])));
        }
      }
    }
  }
  const b = file.tensor(biasIndex);
  const input = file.tensor(inputIndex);
  assert.ok(Math.abs(b.scale[0] / (input.scale[0] * w.scale[0]) - 1) < 1e-5);
  const bias = graph.weights.get(conv.bias!)!;
  for (let o = 0; o < cout; o++) {
    assert.equal(bias.data[o], Math.fround(b.scale[0] * b.data.getInt32(4 * o, true)));
  }

  // Operator 1 is a DEPTHWISE_CONV_2D: [1, kh, kw, c] becomes [c, 1, kh, kw].
  const d = file.tensor(file.operators[1].inputs[1]);
  const depthwise = graph.nodes[1];
  assert.ok(depthwise.kind === "conv2d");
  const dw = graph.weights.get(depthwise.weight)!;
  const c = d.shape[3];
  assert.deepEqual(dw.shape, [c, 1, 3, 3]);
  assert.equal(depthwise.groups, c);
  for (let ch = 0; ch < c; ch++) {
    for (let k = 0; k < 9; k++) {
      const q = d.data.getUint8(k * c + ch);
      assert.equal(dw.data[ch * 9 + k], Math.fround(d.scale[0] * (q - d.zeroPoint[0])));
    }
  }
});

Deno.test("per-channel int8, QUANTIZE/DEQUANTIZE and the int32 operator code field", () => {
  const graph = readTflite(smallModel(), "/models/small.tflite");
  assert.equal(graph.name, "small");
  assert.deepEqual(
    graph.nodes.map((n) => [n.kind, n.name, n.inputs]),
    [
      ["conv2d", "conv", [GRAPH_INPUT]],
      ["avgPool", "pool", ["conv"]],
      ["flatten", "flat", ["pool"]],
      ["softmax", "probs", ["flat"]],
    ],
  );
  const [conv, pool] = graph.nodes;
  assert.deepEqual(conv, {
    kind: "conv2d",
    name: "conv",
    inputs: [GRAPH_INPUT],
    weight: "w",
    bias: "b",
    stride: [4, 4],
    padding: "valid",
    dilation: [1, 1],
    groups: 1,
    activation: "relu",
  });
  assert.deepEqual(pool, {
    kind: "avgPool",
    name: "pool",
    inputs: ["conv"],
    window: [4, 4],
    stride: [1, 1],
    padding: "valid",
  });
  // Channel 0: 0.5·(q − 0); channel 1: 0.25·(q − 1).
  assert.deepEqual(graph.weights.get("w"), {
    shape: [2, 3, 1, 1],
    data: Float32Array.of(0.5, 1, 1.5, -1.25, 1, 1.25),
  });
  assert.deepEqual([...graph.weights.get("b")!.data].map((v) => +v.toFixed(5)), [1, -4]);
  assert.equal(graph.probabilities, "probs");
  assert.deepEqual(graph.featureLayers, { layer1: "conv" });
  // An int8 input holds pixel − 128: real = 0.5·(pixel − 128 + 1).
  assert.deepEqual(graph.preprocessing, {
    channelOrder: "rgb",
    mean: [127, 127, 127],
    std: [2, 2, 2],
  });
});

/** Asserts that `action` throws a ModelFormatError naming `path` and matching every pattern. */
async function assertFormatError(
  action: () => unknown,
  path: string,
  ...patterns: RegExp[]
): Promise<void> {
  await assert.rejects(
    async () => await action(),
    (e: Error) => {
      assert.ok(e instanceof ModelFormatError, `${e.name}: ${e.message}`);
      assert.ok(e.message.startsWith(`${path}: `), e.message);
      for (const pattern of patterns) assert.match(e.message, pattern);
      return true;
    },
  );
}

Deno.test("broken files fail with the path and what was expected", async () => {
  const bytes = await Deno.readFile(V1);
  const path = "/data/broken.tflite";
  await assertFormatError(() => readTflite(new Uint8Array(), path), path, /empty/, /expected/);
  await assertFormatError(() => readTflite(bytes.slice(0, 6), path), path, /6 bytes/, /TFL3/);
  // This file keeps its tables after the weight data, then a zip of labels that the reader never
  // needs (TFLite metadata's associated files): cuts before the zip are detected.
  const dataEnd = walk(bytes).dataEnd;
  for (const length of [12, 100, 40_000, bytes.length / 2, dataEnd + 1000, dataEnd + 20_000]) {
    await assertFormatError(
      () => readTflite(bytes.slice(0, length), path),
      path,
      /truncated or corrupt TFLite file: expected .* but the file has \d+ bytes/,
    );
  }
  const foreign = bytes.slice();
  foreign.set(new TextEncoder().encode("XYZ1"), 4);
  await assertFormatError(() => readTflite(foreign, path), path, /"XYZ1"/, /expected .*"TFL3"/);

  // Random bytes, without and with the right identifier.
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  for (let trial = 0; trial < 50; trial++) {
    const noise = Uint8Array.from({ length: 64 + trial * 37 }, random);
    if (trial % 2 === 1) noise.set(new TextEncoder().encode("TFL3"), 4);
    await assertFormatError(() => readTflite(noise, path), path, /expected/);
  }

  // Bytes changed in the tables and vectors (after the weight data in this file) give a graph or
  // a ModelFormatError, never another error.
  const structure = dataEnd;
  for (let trial = 0; trial < 20; trial++) {
    const corrupt = bytes.slice();
    for (let k = 0; k < 4; k++) {
      corrupt[structure + ((random() << 8 | random()) % (bytes.length - structure))] = random();
    }
    try {
      readTflite(corrupt, path);
    } catch (e) {
      assert.ok(e instanceof ModelFormatError, `trial ${trial}: ${(e as Error).stack}`);
    }
  }

  const missing = join(weightsDir, "no_such_model.tflite");
  await assertFormatError(() => loadTflite(missing), missing, /no such file/, /expected/);
});

Deno.test("unsupported operators, activations and options are named", async () => {
  const bytes = await Deno.readFile(V1);
  const file = walk(bytes);
  const view = new DataView(bytes.buffer);

  // Operator code 0 is CONV_2D, in both fields: make it MUL (18).
  const mul = bytes.slice();
  const code = file.operatorCodes[0];
  assert.equal(view.getInt8(file.field(code, 0)), 3);
  mul[file.field(code, 0)] = 18;
  new DataView(mul.buffer).setInt32(file.field(code, 3), 18, true);
  await assertFormatError(
    () => readTflite(mul, V1),
    V1,
    /operator 0 is MUL, which is not supported/,
    /expected one of CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE/,
  );

  // Operator 0's fused activation (Conv2DOptions field 3) RELU6 → TANH.
  const tanh = bytes.slice();
  const activation = file.field(file.options(0), 3);
  assert.equal(view.getInt8(activation), 3);
  tanh[activation] = 4;
  await assertFormatError(
    () => readTflite(tanh, V1),
    V1,
    /operator 0 \(CONV_2D, output "MobilenetV1\/MobilenetV1\/Conv2d_0\/Relu6/,
    /fused activation TANH is not supported; expected NONE, RELU or RELU6/,
  );

  const path = "small.tflite";
  const { FLOAT32, INT8 } = TensorType;
  const variants: [string, Parameters<typeof smallModel>[0], RegExp][] = [
    [
      "an unknown code",
      (m) => m.codes[3] = [{ i8: 127 }, undefined, undefined, { i32: 300 }],
      /builtin operator 300/,
    ],
    [
      "a custom operator",
      (m) => m.codes[3] = [{ i8: 32 }, { str: "MyPool" }],
      /CUSTOM \("MyPool"\)/,
    ],
    [
      "softmax beta 2",
      (m) => m.operators[6] = operator(5, [8], [9], [9, [{ f32: 2 }]]),
      /beta is 2/,
    ],
    [
      "conv options of the wrong type",
      (m) => m.operators[1][3] = { i8: 5 },
      /options are union member 5; expected Conv2DOptions/,
    ],
    [
      "a flatten of a 4×4 map",
      (m) => {
        m.tensors[7] = tensor("pool", [1, 4, 4, 2], FLOAT32);
        m.tensors[8] = tensor("flat", [1, 32], FLOAT32);
        m.operators[4] = operator(3, [6], [7], [5, [{ i8: 1 }, { i32: 1 }, { i32: 1 }, { i32: 1 }, {
          i32: 1,
        }]]);
      },
      /NHWC order NCHW cannot reproduce/,
    ],
    [
      "an input read before it is computed",
      (m) => m.operators[1] = operator(1, [6, 2, 3], [4], [1, [{ i8: 1 }, { i32: 4 }, { i32: 4 }]]),
      /input "conv_dq" is neither the model input nor the result of an earlier operator/,
    ],
    [
      "weights whose bytes do not fill their shape",
      (m) =>
        m.tensors[2] = tensor("w", [3, 1, 1, 3], INT8, 1, {
          scale: [0.5, 0.25],
          zeroPoint: [0, 1],
        }),
      /constant "w" holds 6 bytes; its shape \[3,1,1,3\] of INT8 needs 9/,
    ],
  ];
  for (const [what, change, pattern] of variants) {
    await assertFormatError(() => readTflite(smallModel(change), path), path, pattern).catch(
      (e) => assert.fail(`${what}: ${e.message}`),
    );
  }
});

Deno.test("labels read one per line", async () => {
  const labels = await readLabels(LABELS);
  assert.equal(labels.length, 1001);
  assert.equal(labels[0], "background");
  assert.ok(labels.every((label) => label.length > 0 && label === label.trim()));

  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/two.txt`, " cat \r\ndog\n\n");
    assert.deepEqual(await readLabels(`${dir}/two.txt`), ["cat", "dog"]);
    await Deno.writeTextFile(`${dir}/empty.txt`, "\n");
    await assertFormatError(() => readLabels(`${dir}/empty.txt`), `${dir}/empty.txt`, /no label/);
    await assertFormatError(() => readLabels(`${dir}/none.txt`), `${dir}/none.txt`, /no such file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an empty weight with other sizes of 2^31 is refused without looping", async () => {
  const { INT8, INT32 } = TensorType;
  // 0 input channels per group times 2^31 − 1 filters: no value, but 6·10^9 loop steps.
  const bytes = smallModel((m) => {
    m.tensors[2] = tensor("w", [2 ** 31 - 1, 0, 1, 3], INT8, 0, { scale: [0.5], zeroPoint: [0] });
    m.tensors[3] = tensor("b", [2 ** 31 - 1], INT32, 0, { scale: [0.1], zeroPoint: [0] });
  });
  const started = performance.now();
  await assertFormatError(
    () => readTflite(bytes, "empty.tflite"),
    "empty.tflite",
    /constant "b" holds 0 bytes; its shape \[2147483647\] of INT32 needs 8589934588/,
  );
  assert.ok(performance.now() - started < 1000, `${performance.now() - started} ms`);
});

Deno.test("constants sharing one buffer cannot make a small file decode to gigabytes", async () => {
  const { FLOAT32, INT8 } = TensorType;
  // Two convolutions whose weights (distinct tensors) both read buffer 1's 4095 bytes: twice the
  // buffer in float32 copies, more than the whole file holds.
  const q = { scale: [0.5], zeroPoint: [0] };
  const twoConvolutions = (secondBuffer: number) =>
    smallModel((m) => {
      m.tensors.splice(
        2,
        Infinity,
        tensor("w", [1365, 1, 1, 3], INT8, 1, q),
        tensor("conv", [1, 4, 4, 1365], FLOAT32),
        tensor("w2", [3, 1, 1, 1365], INT8, secondBuffer, q),
        tensor("conv2", [1, 4, 4, 3], FLOAT32),
      );
      const options = (stride: number): [number, Fields] => [
        1,
        [{ i8: 1 }, { i32: stride }, { i32: stride }, { i8: 0 }],
      ];
      m.operators.splice(
        1,
        Infinity,
        operator(1, [1, 2, -1], [3], options(4)),
        operator(1, [3, 4, -1], [5], options(1)),
      );
      m.buffers[1] = new Array(4095).fill(7);
      m.buffers[2] = secondBuffer === 2 ? new Array(4095).fill(9) : [];
    });
  // With a buffer each, the model reads.
  const graph = readTflite(twoConvolutions(2), "own.tflite");
  assert.deepEqual(graph.nodes.map((node) => node.name), ["conv", "conv2"]);
  const bytes = twoConvolutions(1);
  assert.ok(bytes.length < 2 * 4095);
  await assertFormatError(
    () => readTflite(bytes, "shared.tflite"),
    "shared.tflite",
    /its constants \(tensor "w2" and those before it\) hold more bytes in all than the file's/,
  );
});

Deno.test("an input side beyond MAX_MODEL_INPUT_SIDE is refused: classify would resize to it", async () => {
  const { INT8 } = TensorType;
  const bytes = smallModel((m) => {
    m.tensors[0] = tensor("image", [1, 100000, 16, 3], INT8, 0, { scale: [0.5], zeroPoint: [-1] });
  });
  await assertFormatError(
    () => readTflite(bytes, "wide.tflite"),
    "wide.tflite",
    new RegExp(`\\[1,100000,16,3\\]; expected \\[1, H, W, 3\\] .*at most ${MAX_MODEL_INPUT_SIDE}`),
  );
});
