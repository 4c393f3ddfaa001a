/**
 * anodet: visual anomaly detection on WebGPU, for Deno.
 *
 * The engine (GPU runtime, tensors with autograd, layers, optimizers and checkpoints) is exported
 * here together with the data loaders, the methods and the MVTec AD evaluation.
 *
 * @example
 * ```ts
 * import { init, tensor, relu } from "@anodet/webgpu";
 * await init();
 * console.log(await relu(tensor([-1, 2])).toArray()); // Float32Array [0, 2]
 * ```
 *
 * @module
 */

export {
  type AdapterDescription,
  type AdapterSource,
  createGpu,
  currentGpu,
  getGpu,
  Gpu,
  NoGpuAdapterError,
} from "./src/gpu/device.ts";
export type { RecorderStats } from "./src/gpu/recorder.ts";
export type { PoolStats } from "./src/gpu/pool.ts";
export {
  addGrad,
  backward,
  type BackwardFn,
  empty,
  init,
  isGradEnabled,
  keep,
  noGrad,
  opResult,
  type Shape,
  shapeSize,
  Tensor,
  tensor,
  TensorTooLargeError,
  tidy,
  toArrays,
  zeroGrad,
} from "./src/tensor/tensor.ts";
export * from "./src/tensor/ops.ts";
export * from "./src/nn/module.ts";
export * from "./src/nn/layers.ts";
export * from "./src/nn/init.ts";
export * from "./src/nn/optim.ts";
export * from "./src/nn/checkpoint.ts";
export * from "./src/util/fs.ts";
export * from "./src/data/image.ts";
export * from "./src/data/mvtec.ts";
export * from "./src/data/augment.ts";
export { hashSeed, mix32, Random } from "./src/data/random.ts";
export * from "./src/eval/metrics.ts";
export * from "./src/eval/evaluate.ts";
export * from "./src/eval/tiff.ts";
export * from "./src/eval/report.ts";
export * from "./src/eval/plot.ts";
export { resizeBilinear } from "./src/eval/resize.ts";
export * from "./src/methods/ae/model.ts";
export * from "./src/methods/method.ts";
export * from "./src/methods/ae/ae.ts";
export * from "./src/methods/gmm/model.ts";
export * from "./src/methods/variation/model.ts";
export * from "./src/methods/runner.ts";
export * from "./src/eval/run.ts";
export * from "./src/util/progress.ts";
export { VERSION } from "./src/version.ts";
import "./src/methods/builtin.ts";
