// Convolutions with a single input channel (groups = 1), computed directly rather than as a
// matrix product: the forward pass and weight gradient of the first layer of a network on grey
// images, and the input gradient of such a convolution, which is the forward pass of a transposed
// convolution back to one channel. As a product, such a convolution has k = kh·kw (16
// for a 4×4 kernel): the packed column matrix is kh·kw/stride² times the image, and gathering it
// cost more than the product itself on lavapipe. Here the input is stored once, four pixels of a
// row to a texel (pack_rows), and each thread reads the stretch of a row that its pixels' windows
// cover and multiplies it by every tap.
//   pack_rows:  the input [images, 1, in_h, in_w] (through the derivative of PACK_ACTIVATION, as in
//               pack.wgsl, when it is the gradient of an activated output) as rows of texels:
//               texel (image · in_h + y) · row_texels + j holds x = 4j − pad_w … 4j − pad_w + 3,
//               zero outside the image. A row starts pad_w pixels before the image, so the window
//               stretch of 8 output pixels starting at a multiple of 8 starts on a texel.
//               pack_rows4 does the same for rows of a multiple of 4 pixels, with vector loads.
//   pack_kernel_rows: the weight [cout, 1, kh, kw] by kernel rows, up to four taps to a texel.
//   forward:    y [images, cout, out_h, out_w]: each thread computes 8 neighbouring pixels of one
//               output row for 16 output channels, four taps of a kernel row at a time (taps4),
//               then adds the bias (HAS_BIAS) and applies ACTIVATION as it stores them.
//   weight_grad: dw [cout, 1, kh, kw] (kw ≤ 4) of such a convolution: each thread sums, over a
//               part of the output's rows, dy (through the derivative of ACTIVATION, read from
//               the layer's output `y`) times the stretches of x under it, for 8 output channels
//               and 4 kernel rows; the parts' sums are added afterwards (sumInto in reduce.ts).
//               With BIAS_GRAD it sums dy as well: the layer's bias gradient, for no more reads.
//   input_grad: dx [images, 1, in_h, in_w] of such a convolution from dy [images, cout, out_h,
//               out_w] (through PACK_ACTIVATION), which is also a transposed convolution to one
//               channel; then the bias (HAS_BIAS) and ACTIVATION of that transposed convolution.
//               dy is packed by pack_rows as images · cout one-channel images (or copied as it
//               lies in memory, DY_IN_MEMORY_ORDER); each thread computes 8 pixels of 4 rows of
//               dx, reading per channel and row of dy the stretch that reaches them once for all
//               4. STRIDE_W is 1 or 2 and PAD_W is compile-time: which taps reach which of the 8
//               pixels, and where in the stretch, is then fixed (see adjoint_tap).
// STRIDE_W, DILATION_W and KERNEL_W (at most 8) are compile-time, so that every read of the row
// stretch has a constant position; SEGMENT_TEXELS (at most 8) is the stretch's length in texels.
// SHARED_WEIGHT_TEXELS is the input gradient's packed weight's size where it fits in workgroup
// memory, else 0.

// ThinConvParams, ACT_* and TEXTURE_WIDTH are declared in src/tensor/ops/conv_thin.ts;
// OperandTexture (the type of rows and weights) and load_operand in src/gpu/textures.ts.

@group(0) @binding(0) var<uniform> p: ThinConvParams;

fn texel(t: u32) -> vec2u {
  return vec2u(t % TEXTURE_WIDTH, t / TEXTURE_WIDTH);
}

// ---- packing ----------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;
// The fused activation's output that `src` is the gradient of (`src` again when there is none).
@group(0) @binding(3) var<storage, read> activated: array<f32>;

// src[i] times the derivative of PACK_ACTIVATION there (read from its output, as in pack.wgsl).
fn read_src(i: u32) -> f32 {
  if (PACK_ACTIVATION == ACT_NONE) {
    return src[i];
  }
  let slope = select(0.0, p.slope, PACK_ACTIVATION == ACT_LEAKY_RELU);
  return src[i] * select(slope, 1.0, activated[i] > 0.0);
}

@compute @workgroup_size(256)
fn pack_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let row = t / p.row_texels;
  if (row >= p.images * p.in_h) {
    return;
  }
  let first = i32((t - row * p.row_texels) * 4u) - p.pad_w;
  var values = vec4f(0.0);
  for (var j = 0; j < 4; j++) {
    let x = first + j;
    if (x >= 0 && x < i32(p.in_w)) {
      values[j] = read_src(row * p.in_w + u32(x));
    }
  }
  textureStore(dst, texel(t), values);
}

// `src` and `activated` again as vectors, for pack_rows4.
@group(0) @binding(15) var<storage, read> src4: array<vec4f>;
@group(0) @binding(16) var<storage, read> activated4: array<vec4f>;

// Vector i of src (pixels 4i … 4i+3) through PACK_ACTIVATION, as read_src.
fn read_src4(i: u32) -> vec4f {
  if (PACK_ACTIVATION == ACT_NONE) {
    return src4[i];
  }
  let slope = select(0.0, p.slope, PACK_ACTIVATION == ACT_LEAKY_RELU);
  return src4[i] * select(vec4f(slope), vec4f(1.0), activated4[i] > vec4f(0.0));
}

// pack_rows for rows of a multiple of 4 pixels: a texel's four pixels lie in at most two
// aligned vectors of the row, which it reads with one vector load each (on lavapipe a load costs
// about the same for a float or a vector) and shifts by pad_w mod 4.
@compute @workgroup_size(256)
fn pack_rows4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let row = t / p.row_texels;
  if (row >= p.images * p.in_h) {
    return;
  }
  let first = i32((t - row * p.row_texels) * 4u) - p.pad_w;
  // The vectors at `first` rounded down to a multiple of 4, and the next; zero outside the row.
  let vector = first >> 2u;
  let shift = u32(first & 3);
  let vectors = i32(p.in_w / 4u);
  let base = row * p.in_w / 4u;
  var lo = vec4f(0.0);
  var hi = vec4f(0.0);
  if (vector >= 0 && vector < vectors) {
    lo = read_src4(base + u32(vector));
  }
  if (shift != 0u && vector + 1 >= 0 && vector + 1 < vectors) {
    hi = read_src4(base + u32(vector + 1));
  }
  var values = lo;
  switch shift {
    case 1u: { values = vec4f(lo.yzw, hi.x); }
    case 2u: { values = vec4f(lo.zw, hi.xy); }
    case 3u: { values = vec4f(lo.w, hi.xyz); }
    default: {}
  }
  textureStore(dst, texel(t), values);
}

// Texels per kernel row of the weight as pack_kernel_rows stores it.
const KERNEL_W_TEXELS: u32 = (KERNEL_W + 3u) / 4u;

// The weight [cout, 1, kh, kw] by kernel rows: texel (c · kernel_h + ky) · KERNEL_W_TEXELS + j
// holds w[c, 0, ky, 4j … 4j+3] (zero past the kernel, and for the channels past cout up to a
// multiple of 16, which the forward pass computes in blocks of), so one texel serves a row of up
// to 4 taps.
@compute @workgroup_size(64)
fn pack_kernel_rows(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x;
  let row = t / KERNEL_W_TEXELS;
  if (row >= 4u * p.cout_texels * p.kernel_h) {
    return;
  }
  let first = (t - row * KERNEL_W_TEXELS) * 4u;
  var values = vec4f(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (row < p.cout * p.kernel_h && first + j < KERNEL_W) {
      values[j] = src[row * KERNEL_W + first + j];
    }
  }
  textureStore(dst, texel(t), values);
}

// ---- the convolution --------------------------------------------------------------------------

@group(0) @binding(4) var rows: OperandTexture;
@group(0) @binding(5) var weights: OperandTexture;
// Scalar stores where an output row ends inside a thread's 8 pixels.
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
// The bias per output channel (read only when HAS_BIAS; the host binds some buffer regardless).
@group(0) @binding(7) var<storage, read> bias: array<f32>;
// y again as vectors (the host binds y here too), for rows of a multiple of 8 pixels.
@group(0) @binding(8) var<storage, read_write> y4: array<vec4f>;

// Pixels 0–3 (lo*) and 4–7 (hi*) of the thread's 8, for its 16 output channels. Named variables:
// an array of accumulators stays in memory on CPU drivers (see gemm.wgsl).
var<private> lo0: vec4f;
var<private> lo1: vec4f;
var<private> lo2: vec4f;
var<private> lo3: vec4f;
var<private> lo4: vec4f;
var<private> lo5: vec4f;
var<private> lo6: vec4f;
var<private> lo7: vec4f;
var<private> lo8: vec4f;
var<private> lo9: vec4f;
var<private> lo10: vec4f;
var<private> lo11: vec4f;
var<private> lo12: vec4f;
var<private> lo13: vec4f;
var<private> lo14: vec4f;
var<private> lo15: vec4f;
var<private> hi0: vec4f;
var<private> hi1: vec4f;
var<private> hi2: vec4f;
var<private> hi3: vec4f;
var<private> hi4: vec4f;
var<private> hi5: vec4f;
var<private> hi6: vec4f;
var<private> hi7: vec4f;
var<private> hi8: vec4f;
var<private> hi9: vec4f;
var<private> hi10: vec4f;
var<private> hi11: vec4f;
var<private> hi12: vec4f;
var<private> hi13: vec4f;
var<private> hi14: vec4f;
var<private> hi15: vec4f;

// The stretch of one input row that the thread's windows cover (see pack_rows), texels 0–7 (those
// at or past SEGMENT_TEXELS stay unused). Named, like the accumulators, and read only at positions
// that are constant once `tap` is inlined for each kx, so that they can live in registers.
var<private> s0: vec4f;
var<private> s1: vec4f;
var<private> s2: vec4f;
var<private> s3: vec4f;
var<private> s4: vec4f;
var<private> s5: vec4f;
var<private> s6: vec4f;
var<private> s7: vec4f;

fn stretch(i: u32) -> f32 {
  var v: vec4f;
  switch i / 4u {
    case 0u: { v = s0; }
    case 1u: { v = s1; }
    case 2u: { v = s2; }
    case 3u: { v = s3; }
    case 4u: { v = s4; }
    case 5u: { v = s5; }
    case 6u: { v = s6; }
    default: { v = s7; }
  }
  return v[i % 4u];
}

// Loads the stretch: texels t0 … t0 + SEGMENT_TEXELS − 1 of the row that starts at texel
// `row_first`. With `in_row` (constant at each call) texels outside the row, whose row_texels
// hold only its own pixels, read as zero (see DY_IN_MEMORY_ORDER); pack_rows' rows hold the zeros
// around the image themselves.
fn load_stretch(row_first: u32, t0: i32, in_row: bool) {
  s0 = row_texel(row_first, t0, in_row);
  if (SEGMENT_TEXELS > 1u) {
    s1 = row_texel(row_first, t0 + 1, in_row);
  }
  if (SEGMENT_TEXELS > 2u) {
    s2 = row_texel(row_first, t0 + 2, in_row);
  }
  if (SEGMENT_TEXELS > 3u) {
    s3 = row_texel(row_first, t0 + 3, in_row);
  }
  if (SEGMENT_TEXELS > 4u) {
    s4 = row_texel(row_first, t0 + 4, in_row);
  }
  if (SEGMENT_TEXELS > 5u) {
    s5 = row_texel(row_first, t0 + 5, in_row);
  }
  if (SEGMENT_TEXELS > 6u) {
    s6 = row_texel(row_first, t0 + 6, in_row);
  }
  if (SEGMENT_TEXELS > 7u) {
    s7 = row_texel(row_first, t0 + 7, in_row);
  }
}

// Texel t of the row that starts at texel `row_first` (see load_stretch).
fn row_texel(row_first: u32, t: i32, in_row: bool) -> vec4f {
  if (in_row && (t < 0 || t >= i32(p.row_texels))) {
    return vec4f(0.0);
  }
  return load_operand(rows, texel(row_first + u32(t)));
}

// Four steps of a sum: x holds a channel's weights for four taps, b0 … b3 the values under them.
// The taps are added in their order, one multiply-add each, as one tap at a time adds them: the
// results are the same to the bit (a zero weight past the kernel adds an exact zero). Adding them
// in the opposite order moved a seeded GAN's learning test from 0.98 to 0.74 pixel ROC AUC.
fn row_step(x: vec4f, b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f, acc: vec4f) -> vec4f {
  return fma(vec4f(x.w), b3, fma(vec4f(x.z), b2, fma(vec4f(x.y), b1, fma(vec4f(x.x), b0, acc))));
}

// Taps 4j … 4j+3 of the kernel row whose stretch is loaded, for the thread's 16 channels, whose
// weights for them start at texel `first` (see pack_kernel_rows; nothing for j past the kernel).
// A small matrix product as in gemm.wgsl: the weights are A, a channel's four taps to a texel, and
// the stretch under the four taps is B, pixels 0–3 (lo) and then 4–7 (hi), each group of four
// pixels running through all 16 channels so that its values stay in registers. One tap at a time,
// each accumulator went through memory for every multiply-add: on lavapipe the AE's first layer
// took 1.37–2.11 ms that way and 1.28–1.63 ms this way (replays of its training step; of its
// forward pass alone, 1.62–2.04 against 1.50–1.89 ms).
fn taps4(first: u32, j: u32) {
  if (4u * j >= KERNEL_W) {
    return;
  }
  let step = p.kernel_h * KERNEL_W_TEXELS;
  let x0 = load_operand(weights, texel(first));
  let x1 = load_operand(weights, texel(first + 1u * step));
  let x2 = load_operand(weights, texel(first + 2u * step));
  let x3 = load_operand(weights, texel(first + 3u * step));
  let x4 = load_operand(weights, texel(first + 4u * step));
  let x5 = load_operand(weights, texel(first + 5u * step));
  let x6 = load_operand(weights, texel(first + 6u * step));
  let x7 = load_operand(weights, texel(first + 7u * step));
  let x8 = load_operand(weights, texel(first + 8u * step));
  let x9 = load_operand(weights, texel(first + 9u * step));
  let x10 = load_operand(weights, texel(first + 10u * step));
  let x11 = load_operand(weights, texel(first + 11u * step));
  let x12 = load_operand(weights, texel(first + 12u * step));
  let x13 = load_operand(weights, texel(first + 13u * step));
  let x14 = load_operand(weights, texel(first + 14u * step));
  let x15 = load_operand(weights, texel(first + 15u * step));
  let u0 = tap_values(4u * j);
  let u1 = tap_values(4u * j + 1u);
  let u2 = tap_values(4u * j + 2u);
  let u3 = tap_values(4u * j + 3u);
  lo0 = row_step(x0, u0[0], u1[0], u2[0], u3[0], lo0);
  lo1 = row_step(x1, u0[0], u1[0], u2[0], u3[0], lo1);
  lo2 = row_step(x2, u0[0], u1[0], u2[0], u3[0], lo2);
  lo3 = row_step(x3, u0[0], u1[0], u2[0], u3[0], lo3);
  lo4 = row_step(x4, u0[0], u1[0], u2[0], u3[0], lo4);
  lo5 = row_step(x5, u0[0], u1[0], u2[0], u3[0], lo5);
  lo6 = row_step(x6, u0[0], u1[0], u2[0], u3[0], lo6);
  lo7 = row_step(x7, u0[0], u1[0], u2[0], u3[0], lo7);
  lo8 = row_step(x8, u0[0], u1[0], u2[0], u3[0], lo8);
  lo9 = row_step(x9, u0[0], u1[0], u2[0], u3[0], lo9);
  lo10 = row_step(x10, u0[0], u1[0], u2[0], u3[0], lo10);
  lo11 = row_step(x11, u0[0], u1[0], u2[0], u3[0], lo11);
  lo12 = row_step(x12, u0[0], u1[0], u2[0], u3[0], lo12);
  lo13 = row_step(x13, u0[0], u1[0], u2[0], u3[0], lo13);
  lo14 = row_step(x14, u0[0], u1[0], u2[0], u3[0], lo14);
  lo15 = row_step(x15, u0[0], u1[0], u2[0], u3[0], lo15);
  hi0 = row_step(x0, u0[1], u1[1], u2[1], u3[1], hi0);
  hi1 = row_step(x1, u0[1], u1[1], u2[1], u3[1], hi1);
  hi2 = row_step(x2, u0[1], u1[1], u2[1], u3[1], hi2);
  hi3 = row_step(x3, u0[1], u1[1], u2[1], u3[1], hi3);
  hi4 = row_step(x4, u0[1], u1[1], u2[1], u3[1], hi4);
  hi5 = row_step(x5, u0[1], u1[1], u2[1], u3[1], hi5);
  hi6 = row_step(x6, u0[1], u1[1], u2[1], u3[1], hi6);
  hi7 = row_step(x7, u0[1], u1[1], u2[1], u3[1], hi7);
  hi8 = row_step(x8, u0[1], u1[1], u2[1], u3[1], hi8);
  hi9 = row_step(x9, u0[1], u1[1], u2[1], u3[1], hi9);
  hi10 = row_step(x10, u0[1], u1[1], u2[1], u3[1], hi10);
  hi11 = row_step(x11, u0[1], u1[1], u2[1], u3[1], hi11);
  hi12 = row_step(x12, u0[1], u1[1], u2[1], u3[1], hi12);
  hi13 = row_step(x13, u0[1], u1[1], u2[1], u3[1], hi13);
  hi14 = row_step(x14, u0[1], u1[1], u2[1], u3[1], hi14);
  hi15 = row_step(x15, u0[1], u1[1], u2[1], u3[1], hi15);
}

fn activate(v: vec4f) -> vec4f {
  if (ACTIVATION == ACT_RELU) {
    return max(v, vec4f(0.0));
  }
  if (ACTIVATION == ACT_LEAKY_RELU) {
    return select(v * p.slope, v, v > vec4f(0.0));
  }
  return v;
}

// Stores pixels x … x+7 of an output row of channel `channel` at `first` (an index into y).
fn store_pixels(channel: u32, first: u32, x: u32, lo: vec4f, hi: vec4f) {
  if (channel >= p.cout) {
    return;
  }
  store_row_pixels(channel, first, x, p.out_w, lo, hi);
}

// The same for a row `width` pixels long (the forward pass's rows are out_w, the input
// gradient's in_w), after the bias of `channel` and the activation; WHOLE_ROWS when `width` is a
// multiple of 8.
fn store_row_pixels(channel: u32, first: u32, x: u32, width: u32, lo: vec4f, hi: vec4f) {
  var extra = vec4f(0.0);
  if (HAS_BIAS) {
    extra = vec4f(bias[channel]);
  }
  let a = activate(lo + extra);
  let b = activate(hi + extra);
  if (WHOLE_ROWS) {
    y4[first / 4u] = a;
    y4[first / 4u + 1u] = b;
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    if (x + j < width) {
      y[first + j] = a[j];
    }
    if (x + 4u + j < width) {
      y[first + 4u + j] = b[j];
    }
  }
}

@compute @workgroup_size(64)
fn forward(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  // x: (image, output row, group of 8 pixels); z: the block of 16 output channels.
  let q = gid.x + gid.y * nwg.x * 64u;
  let groups = p.out_h * p.groups_per_row;
  if (q >= p.images * groups) {
    return;
  }
  let image = q / groups;
  let oy = (q - image * groups) / p.groups_per_row;
  let group = q - image * groups - oy * p.groups_per_row;
  // The stretch starts at input x = 8 · group · STRIDE_W − pad_w: texel 2 · group · STRIDE_W.
  let stretch_texel = 2u * group * STRIDE_W;
  for (var ky = 0u; ky < p.kernel_h; ky++) {
    let iy = i32(oy * p.stride_h + ky * p.dilation_h) - p.pad_h;
    if (iy < 0 || iy >= i32(p.in_h)) {
      continue;
    }
    load_stretch((image * p.in_h + u32(iy)) * p.row_texels, i32(stretch_texel), false);
    let first = (wid.z * 16u * p.kernel_h + ky) * KERNEL_W_TEXELS;
    taps4(first, 0u);
    taps4(first + 1u, 1u);
  }
  let x = group * 8u;
  let c = wid.z * 16u;
  let row = (image * p.cout + c) * p.out_h + oy;
  let plane = p.out_h * p.out_w;
  let first = row * p.out_w + x;
  store_pixels(c, first, x, lo0, hi0);
  store_pixels(c + 1u, first + plane, x, lo1, hi1);
  store_pixels(c + 2u, first + 2u * plane, x, lo2, hi2);
  store_pixels(c + 3u, first + 3u * plane, x, lo3, hi3);
  store_pixels(c + 4u, first + 4u * plane, x, lo4, hi4);
  store_pixels(c + 5u, first + 5u * plane, x, lo5, hi5);
  store_pixels(c + 6u, first + 6u * plane, x, lo6, hi6);
  store_pixels(c + 7u, first + 7u * plane, x, lo7, hi7);
  store_pixels(c + 8u, first + 8u * plane, x, lo8, hi8);
  store_pixels(c + 9u, first + 9u * plane, x, lo9, hi9);
  store_pixels(c + 10u, first + 10u * plane, x, lo10, hi10);
  store_pixels(c + 11u, first + 11u * plane, x, lo11, hi11);
  store_pixels(c + 12u, first + 12u * plane, x, lo12, hi12);
  store_pixels(c + 13u, first + 13u * plane, x, lo13, hi13);
  store_pixels(c + 14u, first + 14u * plane, x, lo14, hi14);
  store_pixels(c + 15u, first + 15u * plane, x, lo15, hi15);
}

// ---- the weight gradient ----------------------------------------------------------------------

// dy and the activated output it is the gradient of (dy again when there is none), as vectors
// for rows of a multiple of 8 pixels (WHOLE_ROWS), else as floats.
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read> dy_activated: array<f32>;
@group(0) @binding(11) var<storage, read> dy4: array<vec4f>;
@group(0) @binding(12) var<storage, read> dy_activated4: array<vec4f>;
// The parts' sums: [parts, cout, kernel_h · KERNEL_W].
@group(0) @binding(13) var<storage, read_write> partial: array<f32>;
// With BIAS_GRAD, the parts' sums of dy itself: [parts, cout], the layer's bias gradient once
// added up (the threads of the first block of kernel rows store them).
@group(0) @binding(14) var<storage, read_write> partial_bias: array<f32>;

// The derivative of ACTIVATION at outputs y (y > 0 exactly where the input was).
fn activation_slope(y: vec4f) -> vec4f {
  if (ACTIVATION == ACT_NONE) {
    return vec4f(1.0);
  }
  let negative = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return select(vec4f(negative), vec4f(1.0), y > vec4f(0.0));
}

// Pixels x … x+3 of dy at `first` (an index into dy for pixel x), zero past the row, through the
// activation.
fn dy_pixels(first: u32, x: u32) -> vec4f {
  if (WHOLE_ROWS) {
    let g = dy4[first / 4u];
    if (ACTIVATION == ACT_NONE) {
      return g;
    }
    return g * activation_slope(dy_activated4[first / 4u]);
  }
  var g = vec4f(0.0);
  var y = vec4f(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (x + j < p.out_w) {
      g[j] = dy[first + j];
      y[j] = dy_activated[first + j];
    }
  }
  if (ACTIVATION == ACT_NONE) {
    return g;
  }
  return g * activation_slope(y);
}

// The thread's 8 channels of dy at its current 8 pixels: channel c in (d_lo[c], d_hi[c]).
var<private> d_lo: array<vec4f, 8>;
var<private> d_hi: array<vec4f, 8>;

// The input under taps kx = 0 … 3 of the current kernel row, for pixels 0–3 and 4–7.
var<private> x_lo0: vec4f;
var<private> x_lo1: vec4f;
var<private> x_lo2: vec4f;
var<private> x_lo3: vec4f;
var<private> x_hi0: vec4f;
var<private> x_hi1: vec4f;
var<private> x_hi2: vec4f;
var<private> x_hi3: vec4f;

// With BIAS_GRAD, the sums of dy for channels 0–3 and 4–7 of the thread's.
var<private> bias_lo: vec4f;
var<private> bias_hi: vec4f;

// The sums of kernel row `row` (0–3 of the thread's) for channel c: kx = 0 … 3 in one vector.
var<private> g0: vec4f;
var<private> g1: vec4f;
var<private> g2: vec4f;
var<private> g3: vec4f;
var<private> g4: vec4f;
var<private> g5: vec4f;
var<private> g6: vec4f;
var<private> g7: vec4f;
var<private> g8: vec4f;
var<private> g9: vec4f;
var<private> g10: vec4f;
var<private> g11: vec4f;
var<private> g12: vec4f;
var<private> g13: vec4f;
var<private> g14: vec4f;
var<private> g15: vec4f;
var<private> g16: vec4f;
var<private> g17: vec4f;
var<private> g18: vec4f;
var<private> g19: vec4f;
var<private> g20: vec4f;
var<private> g21: vec4f;
var<private> g22: vec4f;
var<private> g23: vec4f;
var<private> g24: vec4f;
var<private> g25: vec4f;
var<private> g26: vec4f;
var<private> g27: vec4f;
var<private> g28: vec4f;
var<private> g29: vec4f;
var<private> g30: vec4f;
var<private> g31: vec4f;

// The stretch's values under tap kx for the thread's pixels 0–3 and 4–7.
fn tap_values(kx: u32) -> array<vec4f, 2> {
  if (kx >= KERNEL_W) {
    return array<vec4f, 2>(vec4f(0.0), vec4f(0.0));
  }
  let x = kx * DILATION_W;
  return array<vec4f, 2>(
    vec4f(
      stretch(x),
      stretch(x + STRIDE_W),
      stretch(x + 2u * STRIDE_W),
      stretch(x + 3u * STRIDE_W),
    ),
    vec4f(
      stretch(x + 4u * STRIDE_W),
      stretch(x + 5u * STRIDE_W),
      stretch(x + 6u * STRIDE_W),
      stretch(x + 7u * STRIDE_W),
    ),
  );
}

// The stretch in s0 … s7 as the input under each tap of the row (taps past KERNEL_W read values
// that are never stored).
fn load_taps() {
  let t0 = tap_values(0u);
  let t1 = tap_values(1u);
  let t2 = tap_values(2u);
  let t3 = tap_values(3u);
  x_lo0 = t0[0];
  x_hi0 = t0[1];
  x_lo1 = t1[0];
  x_hi1 = t1[1];
  x_lo2 = t2[0];
  x_hi2 = t2[1];
  x_lo3 = t3[0];
  x_hi3 = t3[1];
}

// Channel c's products with the current row's taps, added to its sums `sums`.
fn add_row(sums: ptr<private, vec4f>, c: u32) {
  let lo = d_lo[c];
  let hi = d_hi[c];
  *sums += vec4f(
    dot(lo, x_lo0) + dot(hi, x_hi0),
    dot(lo, x_lo1) + dot(hi, x_hi1),
    dot(lo, x_lo2) + dot(hi, x_hi2),
    dot(lo, x_lo3) + dot(hi, x_hi3),
  );
}

// Stores the sums of kernel row ky for channel c of part `part`.
fn store_row(part: u32, c: u32, ky: u32, sums: vec4f) {
  if (c >= p.cout || ky >= p.kernel_h) {
    return;
  }
  let taps = p.kernel_h * KERNEL_W;
  let first = (part * p.cout + c) * taps + ky * KERNEL_W;
  for (var kx = 0u; kx < KERNEL_W; kx++) {
    partial[first + kx] = sums[kx];
  }
}

@compute @workgroup_size(64)
fn weight_grad(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
) {
  // x: the part; z: (block of 4 kernel rows, block of 8 output channels).
  let part = gid.x;
  if (part >= p.parts) {
    return;
  }
  let channel_blocks = (p.cout + 7u) / 8u;
  let row_block = wid.z / channel_blocks;
  let c0 = (wid.z - row_block * channel_blocks) * 8u;
  let ky0 = row_block * 4u;
  let groups = p.out_h * p.groups_per_row;
  let plane = p.out_h * p.out_w;
  let end = min((part + 1u) * p.groups_per_part, p.images * groups);
  for (var q = part * p.groups_per_part; q < end; q++) {
    let image = q / groups;
    let oy = (q - image * groups) / p.groups_per_row;
    let group = q - image * groups - oy * p.groups_per_row;
    let x = group * 8u;
    // dy at the 8 pixels for the thread's channels (zero for channels past cout).
    let first = ((image * p.cout + c0) * p.out_h + oy) * p.out_w + x;
    for (var c = 0u; c < 8u; c++) {
      if (c0 + c < p.cout) {
        d_lo[c] = dy_pixels(first + c * plane, x);
        d_hi[c] = dy_pixels(first + c * plane + 4u, x + 4u);
      } else {
        d_lo[c] = vec4f(0.0);
        d_hi[c] = vec4f(0.0);
      }
    }
    if (BIAS_GRAD) {
      let ones = vec4f(1.0);
      bias_lo += vec4f(
        dot(d_lo[0] + d_hi[0], ones),
        dot(d_lo[1] + d_hi[1], ones),
        dot(d_lo[2] + d_hi[2], ones),
        dot(d_lo[3] + d_hi[3], ones),
      );
      bias_hi += vec4f(
        dot(d_lo[4] + d_hi[4], ones),
        dot(d_lo[5] + d_hi[5], ones),
        dot(d_lo[6] + d_hi[6], ones),
        dot(d_lo[7] + d_hi[7], ones),
      );
    }
    let stretch_texel = 2u * group * STRIDE_W;
    for (var row = 0u; row < 4u; row++) {
      let ky = ky0 + row;
      let iy = i32(oy * p.stride_h + ky * p.dilation_h) - p.pad_h;
      if (ky >= p.kernel_h || iy < 0 || iy >= i32(p.in_h)) {
        continue;
      }
      load_stretch((image * p.in_h + u32(iy)) * p.row_texels, i32(stretch_texel), false);
      load_taps();
      switch row {
        case 0u: {
          add_row(&g0, 0u);
          add_row(&g1, 1u);
          add_row(&g2, 2u);
          add_row(&g3, 3u);
          add_row(&g4, 4u);
          add_row(&g5, 5u);
          add_row(&g6, 6u);
          add_row(&g7, 7u);
        }
        case 1u: {
          add_row(&g8, 0u);
          add_row(&g9, 1u);
          add_row(&g10, 2u);
          add_row(&g11, 3u);
          add_row(&g12, 4u);
          add_row(&g13, 5u);
          add_row(&g14, 6u);
          add_row(&g15, 7u);
        }
        case 2u: {
          add_row(&g16, 0u);
          add_row(&g17, 1u);
          add_row(&g18, 2u);
          add_row(&g19, 3u);
          add_row(&g20, 4u);
          add_row(&g21, 5u);
          add_row(&g22, 6u);
          add_row(&g23, 7u);
        }
        default: {
          add_row(&g24, 0u);
          add_row(&g25, 1u);
          add_row(&g26, 2u);
          add_row(&g27, 3u);
          add_row(&g28, 4u);
          add_row(&g29, 5u);
          add_row(&g30, 6u);
          add_row(&g31, 7u);
        }
      }
    }
  }
  if (BIAS_GRAD && ky0 == 0u) {
    for (var c = 0u; c < 4u; c++) {
      if (c0 + c < p.cout) {
        partial_bias[part * p.cout + c0 + c] = bias_lo[c];
      }
      if (c0 + 4u + c < p.cout) {
        partial_bias[part * p.cout + c0 + 4u + c] = bias_hi[c];
      }
    }
  }
  store_row(part, c0, ky0, g0);
  store_row(part, c0 + 1u, ky0, g1);
  store_row(part, c0 + 2u, ky0, g2);
  store_row(part, c0 + 3u, ky0, g3);
  store_row(part, c0 + 4u, ky0, g4);
  store_row(part, c0 + 5u, ky0, g5);
  store_row(part, c0 + 6u, ky0, g6);
  store_row(part, c0 + 7u, ky0, g7);
  store_row(part, c0, ky0 + 1u, g8);
  store_row(part, c0 + 1u, ky0 + 1u, g9);
  store_row(part, c0 + 2u, ky0 + 1u, g10);
  store_row(part, c0 + 3u, ky0 + 1u, g11);
  store_row(part, c0 + 4u, ky0 + 1u, g12);
  store_row(part, c0 + 5u, ky0 + 1u, g13);
  store_row(part, c0 + 6u, ky0 + 1u, g14);
  store_row(part, c0 + 7u, ky0 + 1u, g15);
  store_row(part, c0, ky0 + 2u, g16);
  store_row(part, c0 + 1u, ky0 + 2u, g17);
  store_row(part, c0 + 2u, ky0 + 2u, g18);
  store_row(part, c0 + 3u, ky0 + 2u, g19);
  store_row(part, c0 + 4u, ky0 + 2u, g20);
  store_row(part, c0 + 5u, ky0 + 2u, g21);
  store_row(part, c0 + 6u, ky0 + 2u, g22);
  store_row(part, c0 + 7u, ky0 + 2u, g23);
  store_row(part, c0, ky0 + 3u, g24);
  store_row(part, c0 + 1u, ky0 + 3u, g25);
  store_row(part, c0 + 2u, ky0 + 3u, g26);
  store_row(part, c0 + 3u, ky0 + 3u, g27);
  store_row(part, c0 + 4u, ky0 + 3u, g28);
  store_row(part, c0 + 5u, ky0 + 3u, g29);
  store_row(part, c0 + 6u, ky0 + 3u, g30);
  store_row(part, c0 + 7u, ky0 + 3u, g31);
}

// ---- the input gradient -----------------------------------------------------------------------

// Rows of dx per thread: they share the rows of dy that reach them (at stride 2 a 4×4 kernel
// reaches 4 rows of dx from each row of dy), so each stretch of dy is read once for all four.
const ROWS_PER_THREAD: u32 = 4u;
// Pixel j (0–7) of the thread's 8 in dx meets dy pixel o = (j + PAD_W − kx · DILATION_W) / STRIDE_W
// relative to the stretch's base (ix0 / STRIDE_W) where that divides evenly; the stretch starts
// at o = ADJOINT_FIRST (STRETCH_SHIFT pixels into the first texel loaded, see DY_IN_MEMORY_ORDER).
// Zero where the tap does not reach pixel j.
fn reach(kx: u32, j: u32) -> f32 {
  // Both constants are written as i32(…): the host writes negative constants as f32.
  let t = i32(j) + i32(PAD_W) - i32(kx * DILATION_W);
  let o = u32(t / i32(STRIDE_W) - i32(ADJOINT_FIRST));
  return select(0.0, stretch(o + STRETCH_SHIFT), reaches(kx, j));
}

// DY_IN_MEMORY_ORDER: dy is copied into the texture as it lies in memory, texel j of a row (image,
// channel, oy) holding its pixels 4j … 4j+3 (rows a multiple of 4 pixels, row_texels = out_w / 4),
// rather than packed by pack_rows with the stretch's offset and zeros around each row. A texture
// copy is a memcpy on lavapipe: 0.09 ms for the AE's last layer's 4 MB of dy, which pack_rows4 took
// 1.55 ms to store a texel at a time. The stretch then starts STRETCH_SHIFT pixels into its first
// texel, which is FIRST_TEXEL texels from texel 2 · group / STRIDE_W (0 for pack_rows' rows, whose
// stretch starts at that texel), and takes one texel more.
const STRETCH_SHIFT: u32 = select(0u, u32(((i32(ADJOINT_FIRST) % 4) + 4) % 4), DY_IN_MEMORY_ORDER);
const FIRST_TEXEL: i32 = select(
  0,
  (i32(ADJOINT_FIRST) - i32(STRETCH_SHIFT)) / 4,
  DY_IN_MEMORY_ORDER,
);

// Whether tap kx reaches pixel j (constant for constant arguments).
fn reaches(kx: u32, j: u32) -> bool {
  let t = i32(j) + i32(PAD_W) - i32(kx * DILATION_W);
  return t % i32(STRIDE_W) == 0;
}

// Adds v to the first (lo) or last (hi) four pixels of the thread's row r (lo_r, hi_r).
fn add_lo(r: u32, v: vec4f) {
  switch r {
    case 0u: { lo0 += v; }
    case 1u: { lo1 += v; }
    case 2u: { lo2 += v; }
    default: { lo3 += v; }
  }
}

fn add_hi(r: u32, v: vec4f) {
  switch r {
    case 0u: { hi0 += v; }
    case 1u: { hi1 += v; }
    case 2u: { hi2 += v; }
    default: { hi3 += v; }
  }
}

// Tap kx of the stretch of dy loaded for the current channel, whose weight there is w: its
// contributions to the thread's row r. Called with constant r and kx, and nothing for kx past
// the kernel. With stride 2 a tap reaches every other pixel: lo_r then holds the even pixels and
// hi_r the odd ones, and a tap adds to whichever it reaches, with no multiplications by zero.
fn adjoint_tap(r: u32, kx: u32, w: f32) {
  if (kx >= KERNEL_W) {
    return;
  }
  if (STRIDE_W == 1u) {
    add_lo(r, w * vec4f(reach(kx, 0u), reach(kx, 1u), reach(kx, 2u), reach(kx, 3u)));
    add_hi(r, w * vec4f(reach(kx, 4u), reach(kx, 5u), reach(kx, 6u), reach(kx, 7u)));
    return;
  }
  if (reaches(kx, 0u)) {
    add_lo(r, w * vec4f(reach(kx, 0u), reach(kx, 2u), reach(kx, 4u), reach(kx, 6u)));
  } else {
    add_hi(r, w * vec4f(reach(kx, 1u), reach(kx, 3u), reach(kx, 5u), reach(kx, 7u)));
  }
}

// The packed weight in workgroup memory, where it fits (SHARED_WEIGHT_TEXELS > 0: its texels), of
// the input gradient. On lavapipe every thread's textureLoad of a weight is a gather of its own,
// though all lanes read the same texel; from workgroup memory the AE's last layer took 2.3–3.1 ms
// instead of 3.4–4.9 ms (with no weight reads at all, 1.4–1.8 ms). The forward pass, whose 16
// channels' weights serve 8 pixels each, was slower so (1.9–2.8 ms against 1.6–2.1 for the first
// layer). Those figures are for sampled operand textures (ANODET_OPERAND_TEXTURES=sampled, where
// staging still pays: 2.8–3.9 against 3.7–5.4 ms); from read-only storage textures, the default
// where WGSL has them, the last layer took about 2.2 ms either way.
var<workgroup> shared_weights: array<vec4f, max(SHARED_WEIGHT_TEXELS, 1u)>;

// The threads of a workgroup copy the packed weight to workgroup memory together, before any of
// them returns (where SHARED_WEIGHT_TEXELS > 0).
fn stage_weights(lane: u32) {
  if (SHARED_WEIGHT_TEXELS > 0u) {
    for (var t = lane; t < SHARED_WEIGHT_TEXELS; t += 64u) {
      shared_weights[t] = load_operand(weights, texel(t));
    }
    workgroupBarrier();
  }
}

// Texel t of the packed weight.
fn weight_texel(t: u32) -> vec4f {
  if (SHARED_WEIGHT_TEXELS > 0u) {
    return shared_weights[t];
  }
  return load_operand(weights, texel(t));
}

// Kernel row `kernel_row` (c · kernel_h + ky) of the weight, for the thread's row r.
fn adjoint_row(r: u32, kernel_row: u32) {
  let first = kernel_row * KERNEL_W_TEXELS;
  let w = weight_texel(first);
  adjoint_tap(r, 0u, w.x);
  adjoint_tap(r, 1u, w.y);
  adjoint_tap(r, 2u, w.z);
  adjoint_tap(r, 3u, w.w);
  if (KERNEL_W > 4u) {
    let v = weight_texel(first + 1u);
    adjoint_tap(r, 4u, v.x);
    adjoint_tap(r, 5u, v.y);
    adjoint_tap(r, 6u, v.z);
    adjoint_tap(r, 7u, v.w);
  }
}

// ⌊a / b⌋ for b > 0.
fn floor_div(a: i32, b: i32) -> i32 {
  let q = a / b;
  return select(q, q - 1, a % b != 0 && a < 0);
}

// The kernel row that reaches row r of the thread from the current row of dy, t = iy + pad_h −
// oy · stride_h rows below it: t / dilation_h where that divides and lies in the kernel, else −1.
fn kernel_row_at(t: i32) -> i32 {
  let dilation = i32(p.dilation_h);
  let reaches_row = t >= 0 && t % dilation == 0 && t / dilation < i32(p.kernel_h);
  return select(-1, t / dilation, reaches_row);
}

// Pixels 0–3 and 4–7 in order (with stride 2 the accumulators hold the even and the odd ones).
fn in_order_lo(lo: vec4f, hi: vec4f) -> vec4f {
  return select(lo, vec4f(lo.x, hi.x, lo.y, hi.y), STRIDE_W == 2u);
}

fn in_order_hi(lo: vec4f, hi: vec4f) -> vec4f {
  return select(hi, vec4f(lo.z, hi.z, lo.w, hi.w), STRIDE_W == 2u);
}

// Stores row r of the thread's 4 (row iy of dx), unless it lies past the image.
fn store_dx_row(image: u32, iy: u32, x: u32, lo: vec4f, hi: vec4f) {
  if (iy < p.in_h) {
    // One output channel: its bias is bias[0].
    let first = (image * p.in_h + iy) * p.in_w + x;
    store_row_pixels(0u, first, x, p.in_w, in_order_lo(lo, hi), in_order_hi(lo, hi));
  }
}

@compute @workgroup_size(64)
fn input_grad(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(local_invocation_index) lane: u32,
  @builtin(num_workgroups) nwg: vec3u,
) {
  stage_weights(lane);
  // (image, block of ROWS_PER_THREAD rows of dx, group of 8 pixels)
  let q = gid.x + gid.y * nwg.x * 64u;
  let blocks = (p.in_h + ROWS_PER_THREAD - 1u) / ROWS_PER_THREAD;
  let per_image = blocks * p.groups_per_row;
  if (q >= p.images * per_image) {
    return;
  }
  let image = q / per_image;
  let block = (q - image * per_image) / p.groups_per_row;
  let group = q - image * per_image - block * p.groups_per_row;
  let iy0 = block * ROWS_PER_THREAD;
  // The stretch of dy starts at o = 8 · group / STRIDE_W + ADJOINT_FIRST: texel 2 · group / STRIDE_W
  // of pack_rows' rows, FIRST_TEXEL texels from it in memory order.
  let stretch_texel = i32(2u * group / STRIDE_W) + FIRST_TEXEL;
  // The rows of dy that reach the thread's rows: oy · stride_h = iy + pad_h − ky · dilation_h.
  let top = i32(iy0) + p.pad_h;
  let stride = i32(p.stride_h);
  let reach_h = i32((p.kernel_h - 1u) * p.dilation_h);
  let oy_first = max(0, -floor_div(reach_h - top, stride));
  let oy_last = min(i32(p.out_h) - 1, floor_div(top + i32(ROWS_PER_THREAD) - 1, stride));
  for (var oy = oy_first; oy <= oy_last; oy++) {
    let t = top - oy * stride;
    let ky0 = kernel_row_at(t);
    let ky1 = kernel_row_at(t + 1);
    let ky2 = kernel_row_at(t + 2);
    let ky3 = kernel_row_at(t + 3);
    let first_row = image * p.cout * p.out_h + u32(oy);
    for (var c = 0u; c < p.cout; c++) {
      load_stretch((first_row + c * p.out_h) * p.row_texels, stretch_texel, DY_IN_MEMORY_ORDER);
      let kernel_row = c * p.kernel_h;
      if (ky0 >= 0) {
        adjoint_row(0u, kernel_row + u32(ky0));
      }
      if (ky1 >= 0) {
        adjoint_row(1u, kernel_row + u32(ky1));
      }
      if (ky2 >= 0) {
        adjoint_row(2u, kernel_row + u32(ky2));
      }
      if (ky3 >= 0) {
        adjoint_row(3u, kernel_row + u32(ky3));
      }
    }
  }
  let x = group * 8u;
  store_dx_row(image, iy0, x, lo0, hi0);
  store_dx_row(image, iy0 + 1u, x, lo1, hi1);
  store_dx_row(image, iy0 + 2u, x, lo2, hi2);
  store_dx_row(image, iy0 + 3u, x, lo3, hi3);
}
