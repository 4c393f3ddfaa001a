/**
 * The bench's capture of a step (bench/families.ts): every dispatch is recorded with its kernel,
 * and a matrix product says what it computes (shape, path, blocks, parts of k) and its FLOPs, the
 * rows of `deno task bench --detail`'s table by product.
 */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import { init, type Tensor, tidy } from "../../src/tensor/tensor.ts";
import { capture, timeGroups } from "../../bench/families.ts";

Deno.test("capture records each product's shape, path and FLOPs with its dispatch", async () => {
  const gpu = await init();
  const a = op.rand([5, 5001]);
  const b = op.rand([5001, 6]);
  const items = capture(gpu, () => tidy(() => void op.matmul(a, b)));
  const details = items.flatMap((item) =>
    item.kind === "dispatch" && item.label === "gemm:main" && item.detail ? [item.detail] : []
  );
  // 5 × 6 outputs over k = 5001: the k loop is split (kSplits in gemm.ts), and with 5 rows in
  // blocks of 4 the blocks inside C and those at its edge are dispatched apart.
  assert.equal(details.length, 2);
  assert.match(details[0].what, /^matmul 5×6×5001, packed, 4×\d+ blocks, k in \d+ parts$/);
  assert.match(details[1].what, /^matmul 5×6×5001, .*, edge blocks$/);
  // The product's FLOPs count once, with its inside blocks.
  assert.deepEqual(details.map((d) => d.flops), [2 * 5 * 6 * 5001, 0]);
  // Kernels that do not describe themselves (the packing) carry no detail.
  assert.ok(items.some((i) => i.kind === "dispatch" && i.label.startsWith("pack:") && !i.detail));
  await gpu.recorder.sync();
  a.dispose();
  b.dispose();
});

Deno.test("capture files the direct one-channel convolution under GEMM and its packing apart", async () => {
  const gpu = await init();
  const x = op.rand([2, 1, 16, 16]);
  const w = op.rand([8, 1, 4, 4]);
  const items = capture(gpu, () => tidy(() => void op.conv2d(x, w, undefined, { stride: 2 })));
  const dispatches = items.flatMap((item) => item.kind === "dispatch" ? [item] : []);
  assert.deepEqual(
    dispatches.map((d) => [d.label, d.family]),
    [
      ["conv_thin:pack_rows4", "packing"],
      ["conv_thin:pack_kernel_rows", "packing"],
      ["conv_thin:forward", "GEMM"],
    ],
  );
  // 8 channels of 7 × 7 output pixels (stride 2, no padding) from 16 taps each.
  assert.deepEqual(dispatches[2].detail, {
    what: "conv forward 8×98×16, one input channel, direct",
    flops: 2 * 8 * 98 * 16,
  });
  // Rows that are not whole vectors take pack_rows, also filed under packing.
  const odd = op.rand([2, 1, 15, 15]);
  const oddItems = capture(gpu, () => tidy(() => void op.conv2d(odd, w, undefined, { stride: 2 })));
  assert.deepEqual(
    oddItems.flatMap((item) => item.kind === "dispatch" ? [[item.label, item.family]] : []),
    [
      ["conv_thin:pack_rows", "packing"],
      ["conv_thin:pack_kernel_rows", "packing"],
      ["conv_thin:forward", "GEMM"],
    ],
  );
  await gpu.recorder.sync();
  x.dispose();
  odd.dispose();
  w.dispose();
});

Deno.test("capture files a copy of dy into a texture under packing, and its replay matches the op", async () => {
  const gpu = await init();
  // A transposed convolution to one channel over rows of 8 pixels: its input is copied into the
  // texture as it lies in memory instead of packed by pack_rows.
  const x = op.rand([2, 4, 6, 8]);
  const w = op.rand([4, 1, 4, 4]);
  let y: Tensor | undefined;
  const items = capture(gpu, () => {
    y = op.convTranspose2d(x, w, undefined, { stride: 2, padding: 1 });
  });
  assert.deepEqual(
    items.map((item) => [item.kind, item.label, item.family]),
    [
      ["texture copy", "texture copy (step)", "packing"],
      ["dispatch", "conv_thin:pack_kernel_rows", "packing"],
      ["dispatch", "conv_thin:input_grad", "GEMM"],
    ],
  );
  const before = await y!.toArray();
  // New values in x: a replay that copies x again computes y from them.
  const values = Float32Array.from({ length: x.size }, (_, i) => Math.sin(i));
  gpu.recorder.write(x.buffer, 0, values);
  const expected = await op.convTranspose2d(x, w, undefined, { stride: 2, padding: 1 }).toArray();
  const report = await timeGroups(gpu, items, (item) => item.family, ["packing", "GEMM"], 1);
  assert.deepEqual(report.groups.map((group) => group.name), ["packing", "GEMM"]);
  const replayed = await y!.toArray();
  assert.notDeepEqual(replayed, before);
  assert.deepEqual(replayed, expected);
  x.dispose();
  w.dispose();
  y!.dispose();
});
