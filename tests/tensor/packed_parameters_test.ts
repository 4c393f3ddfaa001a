/**
 * Parameters keep their packing as a product's A operand until they are written (gemm.ts,
 * packA): a second product of the same kind packs nothing, and every way a parameter changes
 * (a queue write, an optimizer step, a dispatch that writes it) makes the next product pack it
 * again, so results always follow the parameter's current values.
 */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import { init, noGrad, type Tensor, tensor } from "../../src/tensor/tensor.ts";
import { SGD } from "../../src/nn/optim.ts";
import { setKernelPath } from "../../src/gpu/kernel_path.ts";
import {
  conv2dRef,
  convTranspose2dRef,
  randomRef,
  type Ref,
  relativeError,
  seededRandom,
} from "./reference.ts";

const random = seededRandom(5);

/** A parameter (a leaf that requires a gradient) holding `ref`. */
function parameter(ref: Ref): Tensor {
  const t = tensor(ref.data, ref.shape);
  t.requiresGrad = true;
  return t;
}

async function toRef(t: Tensor): Promise<Ref> {
  return { data: Float64Array.from(await t.toArray()), shape: [...t.shape] };
}

async function assertClose(actual: Tensor, expected: Ref, what: string): Promise<void> {
  const error = relativeError(await actual.toArray(), expected.data);
  assert.ok(error < 1e-5, `${what}: relative error ${error}`);
}

/** Dispatches that `fn` records. */
async function dispatchesOf(fn: () => Tensor): Promise<number> {
  const gpu = await init();
  await gpu.recorder.sync();
  const before = gpu.recorder.stats.dispatches;
  const result = fn();
  const count = gpu.recorder.stats.dispatches - before;
  result.dispose();
  return count;
}

// Eight channels take the implicit product, whose A is the packed weight.
const xRef = randomRef([2, 8, 6, 8], random);
const convOptions = { padding: 1 };
const transposedOptions = { stride: 2, padding: 1 };

/**
 * Runs `fn` on the texture engine, whose products pack their operands (the tiled one reads
 * buffers), whichever engine the other tests run on.
 */
async function onTextureKernels(fn: () => Promise<void>): Promise<void> {
  const gpu = await init();
  setKernelPath(gpu, "texture");
  try {
    await fn();
  } finally {
    setKernelPath(gpu, null);
  }
}

Deno.test("a parameter is packed once for repeated products of the same kind", () =>
  onTextureKernels(packedOnce));

async function packedOnce(): Promise<void> {
  const x = tensor(xRef.data, xRef.shape);
  const w = parameter(randomRef([8, 8, 3, 3], random));
  const forward = () => noGrad(() => op.conv2d(x, w, undefined, convOptions));
  const first = await dispatchesOf(forward);
  const second = await dispatchesOf(forward);
  assert.equal(second, first - 1, "the second forward pass skips pack_a");
  // A plain tensor (no gradient) is packed every time.
  const constant = tensor(await w.toArray(), w.shape);
  const plain = () => noGrad(() => op.conv2d(x, constant, undefined, convOptions));
  await dispatchesOf(plain);
  assert.equal(await dispatchesOf(plain), first);
  x.dispose();
  w.dispose();
  constant.dispose();
}

Deno.test("a parameter keeps its four most recent kinds of product", () =>
  onTextureKernels(async () => {
    const w = parameter(randomRef([8, 8, 3, 3], random));
    const inputs = [1, 2, 3, 4, 5].map((n) => op.rand([n, 8, 6, 8]));
    const forward = (x: Tensor) => () => noGrad(() => op.conv2d(x, w, undefined, convOptions));
    const packing = await dispatchesOf(forward(inputs[0]));
    const reusing = await dispatchesOf(forward(inputs[0]));
    assert.equal(reusing, packing - 1);
    // Batches of 2, 3 and 4 images are three more kinds: the first is still kept.
    for (const x of inputs.slice(1, 4)) await dispatchesOf(forward(x));
    assert.equal(await dispatchesOf(forward(inputs[0])), reusing);
    // A fifth kind pushes out the one packed longest ago, the batch of 1.
    await dispatchesOf(forward(inputs[4]));
    assert.equal(await dispatchesOf(forward(inputs[0])), packing);
    inputs.forEach((x) => x.dispose());
    w.dispose();
  }));

// Written from the CPU (as loading a checkpoint does) or by a kernel, then read by a product.
const writers: [string, (w: Tensor) => Ref][] = [
  ["the queue", (w) => {
    const changed = randomRef([8, 8, 3, 3], random);
    w.gpu.recorder.write(w.buffer, 0, Float32Array.from(changed.data));
    return changed;
  }],
  ["a kernel", (w) => {
    op.fillInto(w, 0.25);
    return { data: new Float64Array(8 * 8 * 9).fill(0.25), shape: [8, 8, 3, 3] };
  }],
];

for (const [writer, write] of writers) {
  Deno.test(`a parameter written by ${writer} is packed again`, async () => {
    await init();
    const x = tensor(xRef.data, xRef.shape);
    const w = parameter(randomRef([8, 8, 3, 3], random));
    noGrad(() => op.conv2d(x, w, undefined, convOptions)).dispose();
    const written = write(w);
    const y = noGrad(() => op.conv2d(x, w, undefined, convOptions));
    await assertClose(y, conv2dRef(xRef, written, convOptions), `after a write by ${writer}`);
    x.dispose();
    w.dispose();
    y.dispose();
  });
}

Deno.test("parameters updated by an optimizer step are packed again", async () => {
  const x = tensor(xRef.data, xRef.shape);
  const w = parameter(randomRef([8, 8, 3, 3], random));
  const wt = parameter(randomRef([8, 4, 4, 4], random));
  const optimizer = new SGD([w, wt], { lr: 0.5 });
  for (let step = 0; step < 2; step++) {
    const y = op.convTranspose2d(op.conv2d(x, w, undefined, convOptions), wt, undefined, {
      ...transposedOptions,
    });
    op.sum(op.square(y)).backward();
    optimizer.step();
    w.grad = null;
    wt.grad = null;
    const wRef = await toRef(w);
    const wtRef = await toRef(wt);
    const hidden = noGrad(() => op.conv2d(x, w, undefined, convOptions));
    await assertClose(hidden, conv2dRef(xRef, wRef, convOptions), `conv after step ${step}`);
    const out = noGrad(() => op.convTranspose2d(hidden, wt, undefined, transposedOptions));
    await assertClose(
      out,
      convTranspose2dRef(await toRef(hidden), wtRef, transposedOptions),
      `transposed conv after step ${step}`,
    );
    hidden.dispose();
    out.dispose();
  }
  optimizer.dispose();
  x.dispose();
  w.dispose();
  wt.dispose();
});

Deno.test("disposed parameters give their packings back", async () => {
  const gpu = await init();
  const x = tensor(xRef.data, xRef.shape);
  const cycle = () => {
    const w = parameter(randomRef([8, 8, 3, 3], random));
    noGrad(() => op.conv2d(x, w, undefined, convOptions)).dispose();
    w.dispose();
  };
  cycle();
  const allocated = gpu.textures.allocatedBytes;
  for (let i = 0; i < 20; i++) cycle();
  assert.equal(gpu.textures.allocatedBytes, allocated);
  x.dispose();
});
