/**
 * The tiled storage-buffer engine (gemm_tiled.ts) on lavapipe: forward against the float64
 * references on sizes that are not multiples of the tiles (and that pick each tile shape),
 * backward against central finite differences, agreement with the texture engine's matmul,
 * conv2d and convTranspose2d, and the choice of engine (kernel_path.ts).
 */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import {
  conv2dTiled,
  convTranspose2dTiled,
  matmulTiled,
  tileConfig,
} from "../../src/tensor/ops/gemm_tiled.ts";
import { kernelPath, type KernelPathDevice, setKernelPath } from "../../src/gpu/kernel_path.ts";
import { init, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import {
  activateRef,
  type ActivationRef,
  addChannelBiasRef,
  conv2dRef,
  convTranspose2dRef,
  expectOp,
  matmulRef,
  type OpCase,
  padSameRef,
  randomRef,
  type Ref,
  relativeError,
  seededRandom,
} from "./reference.ts";

const random = seededRandom(23);
const input = (shape: number[]): Ref => randomRef(shape, random);

// ---- matmul -------------------------------------------------------------------------------------

/** [a shape, b shape]: forward-only cases may be large, gradient cases are finite differences. */
const matmulCases: [string, number[], number[], boolean][] = [
  ["1×1", [1, 1], [1, 1], true],
  ["odd 5×7·7×9", [5, 7], [7, 9], true],
  ["4-aligned 8×12·12×8 (vector loads)", [8, 12], [12, 8], true],
  ["batched 3×6×5·3×5×7", [3, 6, 5], [3, 5, 7], true],
  ["2-D left shared by a batch", [6, 8], [2, 8, 4], true],
  ["2-D right shared by a batch", [2, 5, 8], [8, 12], true],
  ["70×37·37×66 (several 32×32 tiles, none full)", [70, 37], [37, 66], false],
  ["3×20·20×130 (short and wide tiles)", [3, 20], [20, 130], false],
  ["130×20·20×3 (tall and narrow tiles)", [130, 20], [20, 3], false],
  ["33×300·300×17 (TILE_K 32)", [33, 300], [300, 17], false],
  ["batched 4×65×64·64×67 (vector A)", [4, 65, 64], [64, 67], false],
  ["257×260·260×300 (64×64 tiles)", [257, 260], [260, 300], false],
];

for (const [name, aShape, bShape, gradients] of matmulCases) {
  Deno.test(`matmulTiled ${name}: forward${gradients ? " and backward" : ""}`, () =>
    expectOp(name, {
      inputs: [input(aShape), input(bShape)],
      gpu: matmulTiled,
      ref: matmulRef,
      gradInputs: gradients ? undefined : [],
    }));
}

Deno.test("tileConfig: narrow sides get narrow tiles, big products 64×64, cached per shape", () => {
  assert.deepEqual(tileConfig(3, 500, 20, 1), { wgX: 32, wgY: 4, tileK: 16 });
  assert.deepEqual(tileConfig(500, 3, 20, 1), { wgX: 4, wgY: 32, tileK: 16 });
  assert.deepEqual(tileConfig(100, 100, 20, 1), { wgX: 8, wgY: 8, tileK: 16 });
  assert.deepEqual(tileConfig(1024, 1024, 1024, 1), { wgX: 16, wgY: 16, tileK: 32 });
  // 64×64×32 needs 16 KiB of workgroup memory; a device with less keeps TILE_K at 16.
  assert.deepEqual(tileConfig(1024, 1024, 1024, 1, 8192), { wgX: 16, wgY: 16, tileK: 16 });
  assert.equal(tileConfig(77, 91, 13, 2), tileConfig(77, 91, 13, 2));
});

// ---- convolutions -------------------------------------------------------------------------------

type Activation = ActivationRef;

interface ConvCase {
  name: string;
  /** x shape for the forward check and for the gradient check (null: forward only). */
  x: [number[], number[] | null];
  w: number[];
  options: { stride?: number; padding?: number | "same"; dilation?: number; groups?: number };
  bias: boolean;
  activation: Activation;
}

const leaky: Activation = { kind: "leakyRelu", slope: 0.2 };

const convCases: ConvCase[] = [
  {
    name: "3×3 pad 1, 3 channels, bias + leaky ReLU, odd image",
    x: [[2, 3, 7, 9], [1, 3, 5, 4]],
    w: [5, 3, 3, 3],
    options: { padding: 1 },
    bias: true,
    activation: leaky,
  },
  {
    name: "1×1, bias",
    x: [[2, 6, 5, 5], [2, 6, 3, 2]],
    w: [4, 6, 1, 1],
    options: {},
    bias: true,
    activation: undefined,
  },
  {
    name: "4×4 stride 2 'same' on odd sizes, bias + leaky ReLU",
    x: [[2, 4, 9, 7], [1, 4, 5, 3]],
    w: [6, 4, 4, 4],
    options: { stride: 2, padding: "same" },
    bias: true,
    activation: leaky,
  },
  {
    name: "3×3 stride 2 pad 1, no bias",
    x: [[3, 2, 8, 7], [2, 2, 5, 4]],
    w: [3, 2, 3, 3],
    options: { stride: 2, padding: 1 },
    bias: false,
    activation: undefined,
  },
  {
    name: "3×3 dilation 2 pad 2, bias + ReLU",
    x: [[1, 2, 11, 10], [1, 2, 6, 5]],
    w: [3, 2, 3, 3],
    options: { dilation: 2, padding: 2 },
    bias: true,
    activation: { kind: "relu" },
  },
  {
    name: "2×3 kernel pad 1, no bias",
    x: [[2, 3, 6, 7], [1, 3, 4, 4]],
    w: [4, 3, 2, 3],
    options: { padding: 1 },
    bias: false,
    activation: undefined,
  },
  {
    name: "groups 2, 3×3 stride 2 pad 1, bias + leaky ReLU",
    x: [[2, 4, 7, 7], [1, 4, 5, 5]],
    w: [6, 2, 3, 3],
    options: { groups: 2, stride: 2, padding: 1 },
    bias: true,
    activation: leaky,
  },
  {
    name: "16 → 24 channels 3×3 pad 1 on 20×20 (K = 144)",
    x: [[2, 16, 20, 20], null],
    w: [24, 16, 3, 3],
    options: { padding: 1 },
    bias: true,
    activation: leaky,
  },
  {
    name: "32 → 40 channels 3×3 'same' (K = 288: TILE_K 32, vector loads of w)",
    x: [[1, 32, 12, 12], null],
    w: [40, 32, 3, 3],
    options: { padding: "same" },
    bias: true,
    activation: { kind: "relu" },
  },
];

function conv2dCase(c: ConvCase, x: number[]): OpCase {
  const inputs = [input(x), input(c.w)];
  if (c.bias) inputs.push(input([c.w[0]]));
  return {
    inputs,
    gpu: (x: Tensor, w: Tensor, b?: Tensor) =>
      conv2dTiled(x, w, b, { ...c.options, activation: c.activation }),
    ref: (x: Ref, w: Ref, b?: Ref) => {
      const { padding, ...rest } = c.options;
      const y = padding === "same"
        ? conv2dRef(padSameRef(x, c.w[2], c.options.stride ?? 1), w, rest)
        : conv2dRef(x, w, { ...rest, padding });
      return activateRef(b ? addChannelBiasRef(y, b) : y, c.activation);
    },
  };
}

for (const c of convCases) {
  Deno.test(`conv2dTiled ${c.name}: forward matches the float64 reference`, () =>
    expectOp(c.name, { ...conv2dCase(c, c.x[0]), gradInputs: [] }));
  const gradientShape = c.x[1];
  if (gradientShape) {
    Deno.test(`conv2dTiled ${c.name}: backward matches finite differences`, () =>
      expectOp(c.name, conv2dCase(c, gradientShape)));
  }
}

interface ConvTCase {
  name: string;
  x: [number[], number[]];
  w: number[];
  options: { stride?: number; padding?: number; outputPadding?: number; groups?: number };
  activation: Activation;
}

const convTCases: ConvTCase[] = [
  {
    name: "4×4 stride 2 pad 1, bias + leaky ReLU",
    x: [[2, 4, 5, 6], [1, 4, 3, 3]],
    w: [4, 3, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 stride 2 output padding 1, groups 2, bias",
    x: [[2, 4, 4, 5], [1, 4, 3, 2]],
    w: [4, 2, 3, 3],
    options: { stride: 2, padding: 1, outputPadding: 1, groups: 2 },
    activation: undefined,
  },
];

function convTCase(c: ConvTCase, x: number[]): OpCase {
  const cout = c.w[1] * (c.options.groups ?? 1);
  return {
    inputs: [input(x), input(c.w), input([cout])],
    gpu: (x: Tensor, w: Tensor, b: Tensor) =>
      convTranspose2dTiled(x, w, b, { ...c.options, activation: c.activation }),
    ref: (x: Ref, w: Ref, b: Ref) =>
      activateRef(addChannelBiasRef(convTranspose2dRef(x, w, c.options), b), c.activation),
  };
}

for (const c of convTCases) {
  Deno.test(`convTranspose2dTiled ${c.name}: forward matches the float64 reference`, () =>
    expectOp(c.name, { ...convTCase(c, c.x[0]), gradInputs: [] }));
  Deno.test(`convTranspose2dTiled ${c.name}: backward matches finite differences`, () =>
    expectOp(c.name, convTCase(c, c.x[1])));
}

// ---- agreement with the texture engine ----------------------------------------------------------

/** Runs both engines' op on the same f32 inputs and returns the worst relative difference. */
async function engineDifference(
  shapes: number[][],
  texture: (...t: Tensor[]) => Tensor,
  tiled: (...t: Tensor[]) => Tensor,
): Promise<number> {
  await init();
  const refs = shapes.map(input);
  const [a, b] = tidy(() => {
    const tensors = refs.map((r) => tensor(Float32Array.from(r.data), r.shape));
    return [texture(...tensors), tiled(...tensors)];
  });
  const [expected, actual] = [await a.toArray(), await b.toArray()];
  a.dispose();
  b.dispose();
  return relativeError(actual, expected);
}

Deno.test("matmulTiled agrees with the texture engine's matmul", async () => {
  for (const [aShape, bShape] of [[[70, 37], [37, 66]], [[3, 33, 64], [3, 64, 20]]]) {
    const difference = await engineDifference([aShape, bShape], op.matmul, matmulTiled);
    assert.ok(difference <= 1e-5, `[${aShape}]·[${bShape}]: relative difference ${difference}`);
  }
});

Deno.test("conv2dTiled agrees with the texture engine's conv2d (bias + leaky ReLU)", async () => {
  const options: op.Conv2dOptions = { stride: 2, padding: "same", activation: leaky };
  for (const [x, w] of [[[2, 8, 13, 11], [12, 8, 4, 4]], [[2, 3, 9, 9], [5, 3, 3, 3]]]) {
    const difference = await engineDifference(
      [x, w, [w[0]]],
      (x, w, b) => op.conv2d(x, w, b, options),
      (x, w, b) => conv2dTiled(x, w, b, options),
    );
    assert.ok(difference <= 1e-5, `x [${x}], w [${w}]: relative difference ${difference}`);
  }
});

Deno.test("convTranspose2dTiled agrees with the texture engine's convTranspose2d", async () => {
  const options: op.ConvTranspose2dOptions = { stride: 2, padding: 1, activation: leaky };
  const difference = await engineDifference(
    [[2, 8, 6, 7], [8, 4, 4, 4], [4]],
    (x, w, b) => op.convTranspose2d(x, w, b, options),
    (x, w, b) => convTranspose2dTiled(x, w, b, options),
  );
  assert.ok(difference <= 1e-5, `relative difference ${difference}`);
});

Deno.test("products with more column tiles than a dispatch dimension holds fold them into z", async () => {
  const gpu = await init();
  const device = gpu as { maxWorkgroupsPerDimension: number };
  const limit = device.maxWorkgroupsPerDimension;
  // A limit of 3 workgroups makes these products fold their 6 and 7 column tiles into 2 and 3 parts.
  device.maxWorkgroupsPerDimension = 3;
  try {
    await expectOp("3×7·7×700, folded", {
      inputs: [input([3, 7]), input([7, 700])],
      gpu: matmulTiled,
      ref: matmulRef,
      gradInputs: [],
    });
    await expectOp("conv2d of 2×3×20×20, folded", {
      ...conv2dCase(convCases[0], [2, 3, 20, 20]),
      gradInputs: [],
    });
  } finally {
    device.maxWorkgroupsPerDimension = limit;
  }
});

// ---- the choice of engine -----------------------------------------------------------------------

function fakeDevice(isSoftware: boolean): KernelPathDevice {
  return { adapter: { description: "fake", vendor: "fake", isSoftware } };
}

Deno.test("kernelPath: software adapters take the texture engine, others the tiled one", () => {
  const saved = Deno.env.get("ANODET_KERNELS");
  Deno.env.delete("ANODET_KERNELS");
  try {
    assert.equal(kernelPath(fakeDevice(true)), "texture");
    assert.equal(kernelPath(fakeDevice(false)), "tiled");
  } finally {
    if (saved !== undefined) Deno.env.set("ANODET_KERNELS", saved);
  }
});

Deno.test("kernelPath: lavapipe (this machine's adapter) takes the texture engine", async () => {
  const gpu = await init();
  if (!gpu.adapter.isSoftware || Deno.env.get("ANODET_KERNELS")) return;
  assert.equal(kernelPath(gpu), "texture");
});

Deno.test("kernelPath: ANODET_KERNELS overrides the adapter rule, once per device", () => {
  const saved = Deno.env.get("ANODET_KERNELS");
  try {
    Deno.env.set("ANODET_KERNELS", "tiled");
    const software = fakeDevice(true);
    assert.equal(kernelPath(software), "tiled");
    Deno.env.set("ANODET_KERNELS", "texture");
    assert.equal(kernelPath(fakeDevice(false)), "texture");
    // Decided once per device: a later change of the variable does not flip a device's engine.
    assert.equal(kernelPath(software), "tiled");
    Deno.env.set("ANODET_KERNELS", "cuda");
    assert.throws(() => kernelPath(fakeDevice(false)), /ANODET_KERNELS is "cuda"/);
  } finally {
    if (saved === undefined) Deno.env.delete("ANODET_KERNELS");
    else Deno.env.set("ANODET_KERNELS", saved);
  }
});

Deno.test("setKernelPath forces an engine and null returns to the automatic rule", () => {
  const device = fakeDevice(true);
  const saved = Deno.env.get("ANODET_KERNELS");
  Deno.env.delete("ANODET_KERNELS");
  try {
    setKernelPath(device, "tiled");
    assert.equal(kernelPath(device), "tiled");
    setKernelPath(device, null);
    assert.equal(kernelPath(device), "texture");
    assert.throws(() => setKernelPath(device, "cpu" as "tiled"), /takes "texture" or "tiled"/);
  } finally {
    if (saved !== undefined) Deno.env.set("ANODET_KERNELS", saved);
  }
});

Deno.test("kernelPath without env permission ignores ANODET_KERNELS, silently", async () => {
  const module = new URL("../../src/gpu/kernel_path.ts", import.meta.url).href;
  const code = `
    import { kernelPath } from "${module}";
    const device = (isSoftware) => ({ adapter: { description: "", vendor: "", isSoftware } });
    console.log(kernelPath(device(true)), kernelPath(device(false)));
  `;
  // `deno eval` would run with every permission: a script file run with none is the real case.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(script, code);
  const child = new Deno.Command(Deno.execPath(), {
    // No --allow-env, and no terminal to prompt on.
    args: ["run", "--no-prompt", "--no-lock", script],
    env: { ANODET_KERNELS: "tiled", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const { code: status, stdout, stderr } = await child.output();
  await Deno.remove(script);
  const decoder = new TextDecoder();
  assert.equal(status, 0, decoder.decode(stderr));
  assert.equal(decoder.decode(stdout).trim(), "texture tiled");
});
