/** Backbone graphs as safetensors files: round trips, atomic writes, clear errors. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeSafetensors, encodeSafetensors } from "../../../src/nn/checkpoint.ts";
import { type BackboneGraph, ModelFormatError } from "../../../src/nn/backbones/graph.ts";
import { GRAPH_FILE_FORMAT, loadGraph, saveGraph } from "../../../src/nn/backbones/graph_file.ts";

function graph(): BackboneGraph {
  const weight = (shape: number[], seed: number) => ({
    shape,
    data: Float32Array.from(
      { length: shape.reduce((a, b) => a * b, 1) },
      (_, i) => Math.cos(seed + i * 0.37) / 3,
    ),
  });
  // Values whose bits a careless copy would change: −0, a subnormal, NaN with a payload.
  const special = weight([4], 9);
  special.data.set([-0, 1e-45, Infinity]);
  new Uint32Array(special.data.buffer)[3] = 0x7fc01234;
  return {
    name: "tiny",
    nodes: [
      { name: "pad", inputs: ["input"], kind: "pad", pads: [1, 1, 1, 1] },
      {
        name: "conv",
        inputs: ["pad"],
        kind: "conv2d",
        weight: "conv.weight",
        bias: "conv.bias",
        stride: [2, 2],
        padding: "valid",
        dilation: [1, 1],
        groups: 1,
        activation: "relu",
      },
      {
        name: "bn",
        inputs: ["conv"],
        kind: "channelAffine",
        scale: "bn.scale",
        offset: "bn.offset",
        activation: "none",
      },
      { name: "add", inputs: ["bn", "conv"], kind: "add", activation: "none" },
      { name: "act", inputs: ["add"], kind: "activation", activation: "relu" },
      { name: "gap", inputs: ["act"], kind: "globalAvgPool" },
      {
        name: "fc/logits",
        inputs: ["gap"],
        kind: "dense",
        weight: "fc.weight",
        activation: "none",
      },
      { name: "fc", inputs: ["fc/logits"], kind: "softmax" },
    ],
    weights: new Map([
      ["conv.weight", weight([4, 3, 3, 3], 1)],
      ["conv.bias", weight([4], 2)],
      ["bn.scale", special],
      ["bn.offset", weight([4], 4)],
      ["fc.weight", weight([2, 4], 5)],
    ]),
    inputSize: [16, 16],
    preprocessing: { channelOrder: "bgr", mean: [103.939, 116.779, 123.68], std: [1, 1, 1] },
    probabilities: "fc",
    featureLayers: { layer1: "act" },
  };
}

function bits(data: Float32Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

Deno.test("a graph and its labels round-trip bit for bit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "graphs", "tiny.safetensors");
    const original = graph();
    await saveGraph(original, path, ["cat", "dog"]);
    assert.deepEqual([...Deno.readDirSync(join(dir, "graphs"))].map((e) => e.name), [
      "tiny.safetensors",
    ]);
    const { graph: loaded, labels } = await loadGraph(path);
    assert.deepEqual(labels, ["cat", "dog"]);
    assert.equal(loaded.name, original.name);
    assert.deepEqual(loaded.nodes, original.nodes);
    assert.deepEqual(loaded.inputSize, original.inputSize);
    assert.deepEqual(loaded.preprocessing, original.preprocessing);
    assert.equal(loaded.probabilities, "fc");
    assert.deepEqual(loaded.featureLayers, original.featureLayers);
    assert.deepEqual([...loaded.weights.keys()], [...original.weights.keys()]);
    for (const [name, w] of original.weights) {
      assert.deepEqual(loaded.weights.get(name)!.shape, w.shape, name);
      assert.deepEqual(bits(loaded.weights.get(name)!.data), bits(w.data), name);
    }

    // Labels and probabilities are optional.
    const headless = graph();
    delete headless.probabilities;
    await saveGraph(headless, path);
    const again = await loadGraph(path);
    assert.equal(again.labels, undefined);
    assert.equal(again.graph.probabilities, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("foreign, corrupt and inconsistent files are rejected with clear messages", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = join(dir, "good.safetensors");
    await saveGraph(graph(), good, ["cat", "dog"]);
    const { tensors, metadata } = decodeSafetensors(await Deno.readFile(good));
    const rejects = async (name: string, bytes: Uint8Array | undefined, pattern: RegExp) => {
      const path = join(dir, name);
      if (bytes) await Deno.writeFile(path, bytes);
      await assert.rejects(() => loadGraph(path), (e: Error) => {
        assert.ok(e instanceof ModelFormatError, `${name}: ${e}`);
        assert.ok(e.message.startsWith(`${path}: `), e.message);
        assert.match(e.message, pattern);
        return true;
      });
    };
    const variant = (edit: Record<string, string>, drop?: string) => {
      const kept = new Map([...tensors].filter(([name]) => name !== drop));
      return encodeSafetensors(kept, { ...metadata, ...edit });
    };

    await rejects("missing.safetensors", undefined, /cannot read/);
    await rejects("noise.safetensors", crypto.getRandomValues(new Uint8Array(300)), /safetensors/);
    await rejects(
      "checkpoint.safetensors",
      encodeSafetensors(tensors, { method: "ae-l2" }),
      new RegExp(`not a backbone graph file .*"format": "${GRAPH_FILE_FORMAT}"`),
    );
    await rejects("version.safetensors", variant({ version: "7" }), /version 7/);
    await rejects(
      "json.safetensors",
      variant({ nodes: "[{" }),
      /metadata "nodes" is not valid JSON/,
    );
    await rejects(
      "weight.safetensors",
      variant({}, "bn.offset"),
      /node 2 \("bn"\) \(channelAffine\) uses offset "bn\.offset", but there is no such weight/,
    );
    const nodes = JSON.parse(metadata.nodes);
    nodes[3].inputs = ["bn", "later"];
    await rejects(
      "input.safetensors",
      variant({ nodes: JSON.stringify(nodes) }),
      /node 3 \("add"\) takes "later", which no earlier node is/,
    );
    await rejects(
      "kind.safetensors",
      variant({ nodes: JSON.stringify([{ ...nodes[0], kind: "lstm" }]) }),
      /has kind "lstm" \(known: conv2d, /,
    );
    await rejects(
      "feature.safetensors",
      variant({ featureLayers: '{"layer1": "nowhere"}' }),
      /feature layer layer1 names "nowhere", which is no node/,
    );
    await rejects(
      "truncated.safetensors",
      (await Deno.readFile(good)).slice(0, -10),
      /truncated/,
    );
    // A kind named after an Object property is no kind.
    await rejects(
      "constructor.safetensors",
      variant({ nodes: JSON.stringify([{ ...nodes[0], kind: "constructor" }]) }),
      /node 0 \("pad"\) has kind "constructor" \(known: conv2d, /,
    );
    // A name nested a million deep, which a template string cannot turn into text.
    const deepName = "[".repeat(1e6) + "]".repeat(1e6);
    await rejects(
      "deep.safetensors",
      variant({ nodes: `[{"name": ${deepName}}]` }),
      /node 0 \(\[{117}\.\.\.\) has no name/,
    );
    await rejects(
      "metadata.safetensors",
      encodeSafetensors(tensors, { ...metadata, labels: 7 as unknown as string }),
      /"__metadata__" is \{.*; expected an object of strings/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a failed save leaves no partial file and keeps the previous one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "graph.safetensors");
    await saveGraph(graph(), path);
    const before = await Deno.readFile(path);

    // An inconsistent graph is refused before anything is written.
    const broken = graph();
    broken.weights.delete("fc.weight");
    await assert.rejects(() => saveGraph(broken, path), /Cannot save graph "tiny": .*"fc\.weight"/);
    assert.deepEqual(await Deno.readFile(path), before);

    // The rename onto a folder fails after the temporary file was written: it is removed.
    const folder = join(dir, "occupied.safetensors");
    await Deno.mkdir(folder);
    await assert.rejects(() => saveGraph(graph(), folder), /Cannot write/);
    // A folder that cannot be created (its parent is a file).
    await assert.rejects(
      () => saveGraph(graph(), join(path, "sub", "g.safetensors")),
      /Cannot write/,
    );

    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["graph.safetensors", "occupied.safetensors"],
    );
    assert.deepEqual([...Deno.readDirSync(folder)], []);
    assert.deepEqual(await Deno.readFile(path), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
