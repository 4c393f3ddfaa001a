/**
 * Float64 CPU references of the tensor ops, written for clarity rather than speed, and the one
 * helper that checks an op's forward against its reference and its backward against central
 * finite differences of that reference.
 */

import { backward, init, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { currentGpu } from "../../src/gpu/device.ts";

/** A float64 tensor on the CPU. */
export interface Ref {
  data: Float64Array;
  shape: number[];
}

/** Deterministic pseudo-random numbers (mulberry32) for test inputs. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random data in [low, high). */
export function randomRef(shape: number[], random: () => number, low = -1, high = 1): Ref {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(size);
  for (let i = 0; i < size; i++) data[i] = low + (high - low) * random();
  return { data, shape };
}

/** Row-major strides. */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = stride;
    stride *= shape[d];
  }
  return s;
}

/** Maximum over `|a − b| / (|b| + floor)`, the relative error with a floor for values near 0. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  const floor = Math.max(scale * 1e-2, 1e-6);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + floor);
    if (!(error <= worst)) worst = Number.isNaN(error) ? Infinity : Math.max(worst, error);
  }
  return worst;
}

/** A case for {@link checkOp}. */
export interface OpCase {
  /** Inputs, as float64 CPU tensors. */
  inputs: Ref[];
  /** The op on the GPU. */
  gpu: (...inputs: Tensor[]) => Tensor;
  /** The float64 reference. */
  ref: (...inputs: Ref[]) => Ref;
  /** Which inputs get gradient checks (default: all; [] for non-differentiable ops). */
  gradInputs?: number[];
  /** Forward tolerance (relative, default 1e-4). */
  tolerance?: number;
  /** Backward tolerance (relative, default 2e-3). */
  gradTolerance?: number;
  /** Finite-difference step (default 1e-5). */
  step?: number;
}

/** Result of {@link checkOp}: the worst relative errors seen. */
export interface OpCheck {
  forwardError: number;
  gradErrors: number[];
}

/**
 * Runs the op forward on the GPU and compares it with the reference; then backpropagates a random
 * upstream gradient R and compares each input gradient with the central difference of Σ R·ref.
 */
export async function checkOp(c: OpCase): Promise<OpCheck> {
  await init();
  const random = seededRandom(99);
  const gradInputs = c.gradInputs ?? c.inputs.map((_, i) => i);
  const expected = c.ref(...c.inputs);
  const upstream = randomRef(expected.shape, random);
  const { out, inputs } = tidy(() => {
    const tensors = c.inputs.map((r, i) => {
      const t = tensor(Float32Array.from(r.data), r.shape);
      t.requiresGrad = gradInputs.includes(i);
      return t;
    });
    const out = c.gpu(...tensors);
    if (gradInputs.length > 0) {
      backward(out, tensor(Float32Array.from(upstream.data), expected.shape));
    }
    return { out, inputs: tensors };
  });
  if (out.shape.join() !== expected.shape.join()) {
    throw new Error(`Output shape [${out.shape}] differs from the reference's [${expected.shape}]`);
  }
  const forwardError = relativeError(await out.toArray(), expected.data);
  const gradErrors: number[] = [];
  for (const i of gradInputs) {
    const gpuGrad = inputs[i].grad;
    if (!gpuGrad) throw new Error(`No gradient reached input ${i}`);
    const numeric = numericGradient(c, i, upstream);
    gradErrors.push(relativeError(await gpuGrad.toArray(), numeric));
  }
  out.dispose();
  inputs.forEach((t) => t.dispose());
  const errors = currentGpu().errors;
  if (errors.length > 0) throw new Error(`WebGPU reported errors: ${errors.join("; ")}`);
  return { forwardError, gradErrors };
}

function numericGradient(c: OpCase, index: number, upstream: Ref): Float64Array {
  const step = c.step ?? 1e-5;
  const input = c.inputs[index];
  const grad = new Float64Array(input.data.length);
  const objective = () => {
    const out = c.ref(...c.inputs).data;
    let total = 0;
    for (let i = 0; i < out.length; i++) total += out[i] * upstream.data[i];
    return total;
  };
  for (let i = 0; i < input.data.length; i++) {
    const saved = input.data[i];
    input.data[i] = saved + step;
    const plus = objective();
    input.data[i] = saved - step;
    const minus = objective();
    input.data[i] = saved;
    grad[i] = (plus - minus) / (2 * step);
  }
  return grad;
}

// ---- references ---------------------------------------------------------------------------------

/** Elementwise map. */
export function mapRef(x: Ref, f: (v: number) => number): Ref {
  return { data: x.data.map(f), shape: [...x.shape] };
}

/** Broadcasting binary op. */
export function binaryRef(a: Ref, b: Ref, f: (x: number, y: number) => number): Ref {
  const rank = Math.max(a.shape.length, b.shape.length);
  const pad = (s: number[]) => [...new Array(rank - s.length).fill(1), ...s];
  const sa = pad(a.shape), sb = pad(b.shape);
  const shape = sa.map((d, i) => Math.max(d, sb[i]));
  const size = shape.reduce((x, y) => x * y, 1);
  const stA = strides(sa), stB = strides(sb);
  const data = new Float64Array(size);
  for (let i = 0; i < size; i++) {
    let rest = i, ia = 0, ib = 0;
    for (let d = rank - 1; d >= 0; d--) {
      const c = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      if (sa[d] !== 1) ia += c * stA[d];
      if (sb[d] !== 1) ib += c * stB[d];
    }
    data[i] = f(a.data[ia], b.data[ib]);
  }
  return { data, shape };
}

/** Sum (or mean) over axes. */
export function sumRef(x: Ref, axes: number[], keepDims = false, mean = false): Ref {
  const outShapeKeep = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outSize = outShapeKeep.reduce((a, b) => a * b, 1);
  const data = new Float64Array(outSize);
  const outStrides = strides(outShapeKeep);
  const count = axes.reduce((p, a) => p * x.shape[a], 1);
  for (let i = 0; i < x.data.length; i++) {
    let rest = i, o = 0;
    for (let d = x.shape.length - 1; d >= 0; d--) {
      const c = rest % x.shape[d];
      rest = Math.floor(rest / x.shape[d]);
      if (!axes.includes(d)) o += c * outStrides[d];
    }
    data[o] += x.data[i];
  }
  if (mean) { for (let i = 0; i < outSize; i++) data[i] /= count; }
  return { data, shape: keepDims ? outShapeKeep : x.shape.filter((_, i) => !axes.includes(i)) };
}

/** Batched matmul [B?, M, K]·[B?, K, N]. */
export function matmulRef(a: Ref, b: Ref): Ref {
  const batch = Math.max(
    a.shape.length === 3 ? a.shape[0] : 1,
    b.shape.length === 3 ? b.shape[0] : 1,
  );
  const [M, K] = a.shape.slice(-2);
  const N = b.shape[b.shape.length - 1];
  const data = new Float64Array(batch * M * N);
  for (let g = 0; g < batch; g++) {
    const ao = a.shape.length === 3 ? g * M * K : 0;
    const bo = b.shape.length === 3 ? g * K * N : 0;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a.data[ao + m * K + k] * b.data[bo + k * N + n];
        data[(g * M + m) * N + n] = s;
      }
    }
  }
  const shape = a.shape.length === 3 || b.shape.length === 3 ? [batch, M, N] : [M, N];
  return { data, shape };
}

/** Geometry for the convolution references. */
export interface ConvRefOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
  outputPadding?: number;
}

/** conv2d, PyTorch semantics. */
export function conv2dRef(x: Ref, w: Ref, o: ConvRefOptions = {}): Ref {
  const [n, cin, h, wd] = x.shape;
  const [cout, cinG, kh, kw] = w.shape;
  const s = o.stride ?? 1, p = o.padding ?? 0, d = o.dilation ?? 1, g = o.groups ?? 1;
  const oh = Math.floor((h + 2 * p - d * (kh - 1) - 1) / s) + 1;
  const ow = Math.floor((wd + 2 * p - d * (kw - 1) - 1) / s) + 1;
  const coutG = cout / g;
  const data = new Float64Array(n * cout * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < cout; co++) {
      const group = Math.floor(co / coutG);
      for (let y = 0; y < oh; y++) {
        for (let xx = 0; xx < ow; xx++) {
          let acc = 0;
          for (let ci = 0; ci < cinG; ci++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = y * s - p + ky * d;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = xx * s - p + kx * d;
                if (ix < 0 || ix >= wd) continue;
                acc += w.data[((co * cinG + ci) * kh + ky) * kw + kx] *
                  x.data[((b * cin + group * cinG + ci) * h + iy) * wd + ix];
              }
            }
          }
          data[((b * cout + co) * oh + y) * ow + xx] = acc;
        }
      }
    }
  }
  return { data, shape: [n, cout, oh, ow] };
}

/** conv_transpose2d, PyTorch semantics (weight [Cin, Cout/groups, kh, kw]), by scattering. */
export function convTranspose2dRef(x: Ref, w: Ref, o: ConvRefOptions = {}): Ref {
  const [n, cin, h, wd] = x.shape;
  const [, coutG, kh, kw] = w.shape;
  const s = o.stride ?? 1, p = o.padding ?? 0, d = o.dilation ?? 1, g = o.groups ?? 1;
  const op = o.outputPadding ?? 0;
  const oh = (h - 1) * s - 2 * p + d * (kh - 1) + op + 1;
  const ow = (wd - 1) * s - 2 * p + d * (kw - 1) + op + 1;
  const cout = coutG * g;
  const cinG = cin / g;
  const data = new Float64Array(n * cout * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let ci = 0; ci < cin; ci++) {
      const group = Math.floor(ci / cinG);
      for (let y = 0; y < h; y++) {
        for (let xx = 0; xx < wd; xx++) {
          const v = x.data[((b * cin + ci) * h + y) * wd + xx];
          for (let c = 0; c < coutG; c++) {
            for (let ky = 0; ky < kh; ky++) {
              const oy = y * s - p + ky * d;
              if (oy < 0 || oy >= oh) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ox = xx * s - p + kx * d;
                if (ox < 0 || ox >= ow) continue;
                data[((b * cout + group * coutG + c) * oh + oy) * ow + ox] += v *
                  w.data[((ci * coutG + c) * kh + ky) * kw + kx];
              }
            }
          }
        }
      }
    }
  }
  return { data, shape: [n, cout, oh, ow] };
}

/** Max or average pooling. */
export function poolRef(x: Ref, k: number, stride: number, pad: number, kind: "max" | "avg"): Ref {
  const [n, c, h, w] = x.shape;
  const oh = Math.floor((h + 2 * pad - k) / stride) + 1;
  const ow = Math.floor((w + 2 * pad - k) / stride) + 1;
  const data = new Float64Array(n * c * oh * ow);
  for (let plane = 0; plane < n * c; plane++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        let acc = kind === "max" ? -Infinity : 0;
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const iy = y * stride - pad + ky, ix = xx * stride - pad + kx;
            if (iy < 0 || ix < 0 || iy >= h || ix >= w) continue;
            const v = x.data[(plane * h + iy) * w + ix];
            acc = kind === "max" ? Math.max(acc, v) : acc + v;
          }
        }
        data[(plane * oh + y) * ow + xx] = kind === "max" ? acc : acc / (k * k);
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

/** Nearest or bilinear (align_corners = false) resize. */
export function resizeRef(x: Ref, oh: number, ow: number, mode: "nearest" | "bilinear"): Ref {
  const [n, c, h, w] = x.shape;
  const data = new Float64Array(n * c * oh * ow);
  const taps = (o: number, scale: number, size: number): [number, number, number] => {
    const pos = Math.max((o + 0.5) * scale - 0.5, 0);
    const first = Math.min(Math.floor(pos), size - 1);
    return [first, Math.min(first + 1, size - 1), pos - first];
  };
  for (let plane = 0; plane < n * c; plane++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        const at = (iy: number, ix: number) => x.data[(plane * h + iy) * w + ix];
        let v: number;
        if (mode === "nearest") {
          v = at(Math.min(Math.floor(y * h / oh), h - 1), Math.min(Math.floor(xx * w / ow), w - 1));
        } else {
          const [y0, y1, wy] = taps(y, h / oh, h);
          const [x0, x1, wx] = taps(xx, w / ow, w);
          const top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx;
          const bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx;
          v = top * (1 - wy) + bottom * wy;
        }
        data[(plane * oh + y) * ow + xx] = v;
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

/** Separable zero-padded correlation with the same taps on both axes. */
export function filterRef(x: Ref, taps: number[], normalizeBorder = false): Ref {
  const [n, c, h, w] = x.shape;
  const r = Math.floor(taps.length / 2);
  const data = new Float64Array(x.data.length);
  for (let plane = 0; plane < n * c; plane++) {
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        let acc = 0, weight = 0;
        for (let ty = 0; ty < taps.length; ty++) {
          const iy = y + ty - r;
          if (iy < 0 || iy >= h) continue;
          for (let tx = 0; tx < taps.length; tx++) {
            const ix = xx + tx - r;
            if (ix < 0 || ix >= w) continue;
            acc += taps[ty] * taps[tx] * x.data[(plane * h + iy) * w + ix];
            weight += taps[ty] * taps[tx];
          }
        }
        data[(plane * h + y) * w + xx] = normalizeBorder ? acc / weight : acc;
      }
    }
  }
  return { data, shape: [...x.shape] };
}

/** A fused activation as the conv ops take it, or none. */
export type ActivationRef = { kind: "relu" } | { kind: "leakyRelu"; slope: number } | undefined;

/** ReLU or leaky ReLU of a reference, or the reference itself without an activation. */
export function activateRef(y: Ref, activation: ActivationRef): Ref {
  if (!activation) return y;
  const slope = activation.kind === "leakyRelu" ? activation.slope : 0;
  return mapRef(y, (v) => (v > 0 ? v : slope * v));
}

/** y + b with one bias value per channel of an NCHW reference. */
export function addChannelBiasRef(y: Ref, b: Ref): Ref {
  return binaryRef(y, { data: b.data, shape: [1, b.shape[0], 1, 1] }, (u, v) => u + v);
}

/** The explicit padding of "same": TensorFlow's split, the extra row and column at the end. */
export function padSameRef(x: Ref, k: number, stride: number): Ref {
  const [n, c, h, w] = x.shape;
  const total = (size: number) => Math.max((Math.ceil(size / stride) - 1) * stride + k - size, 0);
  const [th, tw] = [total(h), total(w)];
  const [top, left] = [Math.floor(th / 2), Math.floor(tw / 2)];
  const oh = h + th, ow = w + tw;
  const data = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        data[(p * oh + y + top) * ow + xx + left] = x.data[(p * h + y) * w + xx];
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

/** Checks an op case: forward within 1e-4 and every gradient within 2e-3 relative error. */
export async function expectOp(name: string, c: OpCase): Promise<void> {
  const result = await checkOp(c);
  if (!(result.forwardError <= 1e-4)) {
    throw new Error(`${name}: forward relative error ${result.forwardError}`);
  }
  result.gradErrors.forEach((error, i) => {
    if (!(error <= 2e-3)) throw new Error(`${name}: gradient ${i} relative error ${error}`);
  });
}
