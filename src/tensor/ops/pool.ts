/** Pooling and resizing of NCHW tensors: maxPool2d, avgPool2d and upsample. */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { bind, elementGrid, run } from "./launch.ts";
import type { Pair } from "./conv.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";

/** n: elements handled by the dispatch (the output's for forward, the input's for backward). */
const PoolParams = uniformStruct("PoolParams", {
  n: "u32",
  in_h: "u32",
  in_w: "u32",
  out_h: "u32",
  out_w: "u32",
  kernel_h: "u32",
  kernel_w: "u32",
  stride_h: "u32",
  stride_w: "u32",
  pad_h: "i32",
  pad_w: "i32",
});

/** Like PoolParams' n; scale_h = in_h / out_h and scale_w = in_w / out_w. */
const ResizeParams = uniformStruct("ResizeParams", {
  n: "u32",
  in_h: "u32",
  in_w: "u32",
  out_h: "u32",
  out_w: "u32",
  scale_h: "f32",
  scale_w: "f32",
});

declareShader("pool", PoolParams);
declareShader("resize", ResizeParams);

/** Options of the pooling ops. */
export interface PoolOptions {
  /** Step between windows (default: the kernel size). */
  stride?: Pair;
  /** Zero padding per side (default 0); padded cells never win a max. */
  padding?: Pair;
}

function pair(value: Pair | undefined, fallback: [number, number]): [number, number] {
  if (value === undefined) return fallback;
  return typeof value === "number" ? [value, value] : [value[0], value[1]];
}

interface PoolGeometry {
  planes: number;
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
}

function poolGeometry(x: Tensor, kernel: Pair, options: PoolOptions, what: string): PoolGeometry {
  if (x.shape.length !== 4) throw new Error(`${what} expects NCHW input, got [${x.shape}]`);
  const k = pair(kernel, [1, 1]);
  const stride = pair(options.stride, k);
  const padding = pair(options.padding, [0, 0]);
  const [n, c, inH, inW] = x.shape;
  const outH = Math.floor((inH + 2 * padding[0] - k[0]) / stride[0]) + 1;
  const outW = Math.floor((inW + 2 * padding[1] - k[1]) / stride[1]) + 1;
  if (outH <= 0 || outW <= 0 || padding[0] * 2 > k[0] || padding[1] * 2 > k[1]) {
    throw new Error(`${what}: kernel [${k}] with padding [${padding}] does not fit ${inH}×${inW}`);
  }
  return { planes: n * c, inH, inW, outH, outW, kernel: k, stride, padding };
}

function poolParams(count: number, g: PoolGeometry): ArrayBuffer {
  return PoolParams.pack({
    n: count,
    in_h: g.inH,
    in_w: g.inW,
    out_h: g.outH,
    out_w: g.outW,
    kernel_h: g.kernel[0],
    kernel_w: g.kernel[1],
    stride_h: g.stride[0],
    stride_w: g.stride[1],
    pad_h: g.padding[0],
    pad_w: g.padding[1],
  });
}

/** Max over each window; the gradient goes to the window's largest input. */
export function maxPool2d(x: Tensor, kernel: Pair, options: PoolOptions = {}): Tensor {
  const g = poolGeometry(x, kernel, options, "maxPool2d");
  const shape = [x.shape[0], x.shape[1], g.outH, g.outW];
  // u32 pixel indices (shaders/pool.wgsl binds it as array<u32>); a tensor only to hold the
  // buffer for the backward pass and free it with the graph, never read as f32 values.
  const argmax = empty(shape);
  const out = opResult(shape, [x], (grad) => {
    const dx = empty(x.shape);
    run(x, {
      shader: "pool",
      entryPoint: "max_backward",
      params: poolParams(x.size, g),
      buffers: [bind(grad), bind(dx), bind(argmax)],
      workgroups: elementGrid(x.size),
    });
    addGrad(x, dx);
  });
  run(x, {
    shader: "pool",
    entryPoint: "max_forward",
    params: poolParams(out.size, g),
    buffers: [bind(x), bind(out), bind(argmax)],
    workgroups: elementGrid(out.size),
  });
  // Only the backward pass reads the argmax.
  if (!out.requiresGrad) argmax.dispose();
  return out;
}

/** Mean over each window (padding counts as zeros). */
export function avgPool2d(x: Tensor, kernel: Pair, options: PoolOptions = {}): Tensor {
  const g = poolGeometry(x, kernel, options, "avgPool2d");
  const out = opResult([x.shape[0], x.shape[1], g.outH, g.outW], [x], (grad) => {
    const dx = empty(x.shape);
    run(x, {
      shader: "pool",
      entryPoint: "avg_backward",
      params: poolParams(x.size, g),
      buffers: [bind(grad), bind(dx), null],
      workgroups: elementGrid(x.size),
    });
    addGrad(x, dx);
  });
  run(x, {
    shader: "pool",
    entryPoint: "avg_forward",
    params: poolParams(out.size, g),
    buffers: [bind(x), bind(out), null],
    workgroups: elementGrid(out.size),
  });
  return out;
}

/** Options of {@link upsample}: a target size or a scale factor, and the interpolation. */
export interface UpsampleOptions {
  /** Output [height, width]. */
  size?: readonly [number, number];
  /** Factor for both axes, or [height, width] factors (used when `size` is absent). */
  scale?: Pair;
  /** "nearest" (default) or "bilinear" (half-pixel centres, align_corners = false). */
  mode?: "nearest" | "bilinear";
}

/** Resizes the spatial axes of an NCHW tensor (up or down). */
export function upsample(x: Tensor, options: UpsampleOptions): Tensor {
  if (x.shape.length !== 4) throw new Error(`upsample expects NCHW input, got [${x.shape}]`);
  const [n, c, inH, inW] = x.shape;
  let outH: number, outW: number;
  if (options.size) [outH, outW] = options.size;
  else if (options.scale !== undefined) {
    const [sh, sw] = pair(options.scale, [1, 1]);
    [outH, outW] = [Math.floor(inH * sh), Math.floor(inW * sw)];
  } else throw new Error("upsample needs `size` or `scale`");
  if (!(outH > 0 && outW > 0 && Number.isInteger(outH) && Number.isInteger(outW))) {
    throw new Error(`upsample: invalid output size ${outH}×${outW}`);
  }
  const mode = options.mode ?? "nearest";
  if (mode !== "nearest" && mode !== "bilinear") {
    throw new Error(`upsample: unknown mode "${mode}"`);
  }
  const params = (count: number) =>
    ResizeParams.pack({
      n: count,
      in_h: inH,
      in_w: inW,
      out_h: outH,
      out_w: outW,
      scale_h: inH / outH,
      scale_w: inW / outW,
    });
  const out = opResult([n, c, outH, outW], [x], (grad) => {
    const dx = empty(x.shape);
    run(x, {
      shader: "resize",
      entryPoint: `${mode}_backward`,
      params: params(x.size),
      buffers: [bind(grad), bind(dx)],
      workgroups: elementGrid(x.size),
    });
    addGrad(x, dx);
  });
  run(x, {
    shader: "resize",
    entryPoint: `${mode}_forward`,
    params: params(out.size),
    buffers: [bind(x), bind(out)],
    workgroups: elementGrid(out.size),
  });
  return out;
}
