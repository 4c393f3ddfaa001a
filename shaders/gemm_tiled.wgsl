// Tiled matrix products over storage buffers, for discrete GPUs (the texture-fed gemm.wgsl suits
// lavapipe; see src/gpu/kernel_path.ts). The design follows tfjs-backend-webgpu's matmul_packed
// and conv2d_mm: a workgroup of WG_X × WG_Y threads owns a TILE_M × TILE_N block of C
// (TILE_M = 4·WG_Y, TILE_N = 4·WG_X); for every TILE_K-deep slice of k it stages the slices of A
// and B in workgroup memory, cooperatively and with vec4 loads along the contiguous dimension
// where the layout allows, and then each thread accumulates a 4×4 block of C from two vec4 reads
// of shared memory per step of k. Every element of A and B is read from global memory once per
// workgroup instead of once per thread.
//
// C[g, m, n] = Σ_k A[g, m, k] · B[g, k, n] (g: the batch entry, or the convolution group). MODE
// says how A and B are gathered and where C goes:
//   MODE_MATMUL             row-major buffers, optionally transposed (TRANS_A, TRANS_B), batch
//                           strides from the uniforms (0 for an operand shared by the batch).
//   MODE_CONV_FORWARD       A = w [cout, cin/groups·kh·kw], B = the im2col windows of x, gathered
//                           straight from NCHW x (no column matrix); C = y (NCHW).
//   MODE_CONV_INPUT_GRAD    A = wᵀ per tap, B = dy gathered by the windows that reach each input
//                           pixel (taps that a stride skips read zero); C = dx (NCHW). The same
//                           product is a transposed convolution's forward pass.
//   MODE_CONV_WEIGHT_GRAD   A = dy [cout, images·pixels], B = the im2col windows of x transposed;
//                           C = dw ([cout, cin/groups, kh, kw]).
// The epilogue adds the bias of the output channel (HAS_BIAS, convolution modes) and applies
// ACTIVATION as C is stored. Bounds are checked everywhere, so M, N and K are arbitrary.
//
// Two small entry points serve the backward pass of a fused activation: `activation_grad`
// (dz = dy · act′(y)) and `bias_grad` (db[c] = Σ dz over images and pixels).

// TiledParams, MODE_* and ACT_* are declared in src/tensor/ops/gemm_tiled.ts; WG_X, WG_Y, TILE_K,
// TRANS_A, TRANS_B, VEC_A, VEC_B, HAS_BIAS and ACTIVATION are pipeline constants from there.

@group(0) @binding(0) var<uniform> p: TiledParams;
// Operands are viewed as vec4s so that aligned tiles load 16 bytes at a time; gathers read single
// components. Tensors are bound rounded up to 16 bytes (kernel.ts), so the last vector exists.
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4f>;
// Scalar stores: a row of C may end in the middle of a vector, and two threads must never write
// parts of the same vector.
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
// The bias per output channel (read only when HAS_BIAS; the host binds some buffer regardless).
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const TILE_M: u32 = 4u * WG_Y;
const TILE_N: u32 = 4u * WG_X;
const THREADS: u32 = WG_X * WG_Y;

// A's slice stored k-major, four rows to a vector: tile_a[k · TILE_M/4 + m/4] holds rows
// m..m+3 of column k. B's likewise: tile_b[k · TILE_N/4 + n/4] holds columns n..n+3 of row k.
// A thread's 4×4 block then needs exactly one vector of each per step of k.
var<workgroup> tile_a: array<vec4f, TILE_K * TILE_M / 4u>;
var<workgroup> tile_b: array<vec4f, TILE_K * TILE_N / 4u>;

fn read_a(i: u32) -> f32 {
  return a[i >> 2u][i & 3u];
}

fn read_b(i: u32) -> f32 {
  return b[i >> 2u][i & 3u];
}

// ---- gathering A ------------------------------------------------------------------------------

// Whether A's contiguous dimension is k: then a tile is loaded in vectors along k.
const A_ALONG_K: bool = (MODE == MODE_MATMUL && !TRANS_A) || MODE == MODE_CONV_FORWARD ||
  MODE == MODE_CONV_WEIGHT_GRAD;

// Buffer index of A[g, m, k] for the modes where A is a plain matrix (matmul and the forward
// convolution's weight, whose rows are the output channels of group g).
fn a_index(g: u32, m: u32, k: u32) -> u32 {
  if (MODE == MODE_CONV_FORWARD) {
    return (g * p.M + m) * p.K + k;
  }
  if (TRANS_A) {
    return g * p.a_batch_stride + k * p.M + m;
  }
  return g * p.a_batch_stride + m * p.K + k;
}

// A[g, m, k], zero outside the matrix.
fn a_value(g: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) {
    return 0.0;
  }
  if (MODE == MODE_CONV_INPUT_GRAD) {
    // m: input channel within the group; k = (output channel within the group, tap).
    let taps = p.kernel_h * p.kernel_w;
    let co = k / taps;
    let tap = k - co * taps;
    let cout_per_group = p.cout / p.groups;
    return read_a(((g * cout_per_group + co) * p.M + m) * taps + tap);
  }
  if (MODE == MODE_CONV_WEIGHT_GRAD) {
    // m: output channel within the group; k = (image, output pixel) of dy.
    let pixels = p.out_h * p.out_w;
    let image = k / pixels;
    let pixel = k - image * pixels;
    return read_a((image * p.cout + g * p.M + m) * pixels + pixel);
  }
  return read_a(a_index(g, m, k));
}

// Four consecutive elements of A along its contiguous dimension from (m, k): one vector load
// when VEC_A (the host checked alignment, so the vector is wholly inside or wholly outside).
fn a_vec(g: u32, m: u32, k: u32) -> vec4f {
  if (VEC_A) {
    if (m >= p.M || k >= p.K) {
      return vec4f(0.0);
    }
    return a[a_index(g, m, k) >> 2u];
  }
  if (A_ALONG_K) {
    return vec4f(a_value(g, m, k), a_value(g, m, k + 1u), a_value(g, m, k + 2u),
      a_value(g, m, k + 3u));
  }
  return vec4f(a_value(g, m, k), a_value(g, m + 1u, k), a_value(g, m + 2u, k),
    a_value(g, m + 3u, k));
}

// ---- gathering B ------------------------------------------------------------------------------

// Whether B's contiguous dimension is n (everything but a transposed matmul operand; for the
// convolutions n runs over pixels, which are neighbours in memory within a row).
const B_ALONG_N: bool = !(MODE == MODE_MATMUL && TRANS_B);

fn b_index(g: u32, k: u32, n: u32) -> u32 {
  if (TRANS_B) {
    return g * p.b_batch_stride + n * p.K + k;
  }
  return g * p.b_batch_stride + k * p.N + n;
}

// The input pixel (row, column) that tap `tap` of the window of output pixel (oy, ox) reads.
fn window_pixel(tap: u32, oy: u32, ox: u32) -> vec2i {
  let ky = tap / p.kernel_w;
  let kx = tap - ky * p.kernel_w;
  return vec2i(i32(oy * p.stride_h + ky * p.dilation_h) - p.pad_h,
    i32(ox * p.stride_w + kx * p.dilation_w) - p.pad_w);
}

// x[image, channel, pixel.x, pixel.y] of the convolution's input, zero in the padding.
fn input_value(image: u32, channel: u32, pixel: vec2i) -> f32 {
  if (pixel.x < 0 || pixel.y < 0 || pixel.x >= i32(p.in_h) || pixel.y >= i32(p.in_w)) {
    return 0.0;
  }
  return read_b(((image * p.cin + channel) * p.in_h + u32(pixel.x)) * p.in_w + u32(pixel.y));
}

// B[g, k, n], zero outside the matrix.
fn b_value(g: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) {
    return 0.0;
  }
  let taps = p.kernel_h * p.kernel_w;
  if (MODE == MODE_CONV_FORWARD) {
    // k = (input channel within the group, tap); n = (image, output pixel).
    let ci = k / taps;
    let pixels = p.out_h * p.out_w;
    let image = n / pixels;
    let pixel = n - image * pixels;
    let oy = pixel / p.out_w;
    let at = window_pixel(k - ci * taps, oy, pixel - oy * p.out_w);
    return input_value(image, g * (p.cin / p.groups) + ci, at);
  }
  if (MODE == MODE_CONV_INPUT_GRAD) {
    // k = (output channel within the group, tap); n = (image, input pixel). Input row iy meets
    // tap ky in output row oy when oy · stride = iy + pad − ky · dilation.
    let co = k / taps;
    let tap = k - co * taps;
    let ky = tap / p.kernel_w;
    let kx = tap - ky * p.kernel_w;
    let pixels = p.in_h * p.in_w;
    let image = n / pixels;
    let pixel = n - image * pixels;
    let iy = pixel / p.in_w;
    let ix = pixel - iy * p.in_w;
    let ty = i32(iy) + p.pad_h - i32(ky * p.dilation_h);
    let tx = i32(ix) + p.pad_w - i32(kx * p.dilation_w);
    if (ty < 0 || tx < 0) {
      return 0.0;
    }
    let oy = u32(ty) / p.stride_h;
    let ox = u32(tx) / p.stride_w;
    if (oy * p.stride_h != u32(ty) || ox * p.stride_w != u32(tx) || oy >= p.out_h ||
      ox >= p.out_w) {
      return 0.0;
    }
    let channel = image * p.cout + g * (p.cout / p.groups) + co;
    return read_b((channel * p.out_h + oy) * p.out_w + ox);
  }
  if (MODE == MODE_CONV_WEIGHT_GRAD) {
    // k = (image, output pixel); n = (input channel within the group, tap).
    let ci = n / taps;
    let pixels = p.out_h * p.out_w;
    let image = k / pixels;
    let pixel = k - image * pixels;
    let oy = pixel / p.out_w;
    let at = window_pixel(n - ci * taps, oy, pixel - oy * p.out_w);
    return input_value(image, g * (p.cin / p.groups) + ci, at);
  }
  return read_b(b_index(g, k, n));
}

fn b_vec(g: u32, k: u32, n: u32) -> vec4f {
  if (VEC_B) {
    if (k >= p.K || n >= p.N) {
      return vec4f(0.0);
    }
    return b[b_index(g, k, n) >> 2u];
  }
  if (B_ALONG_N) {
    return vec4f(b_value(g, k, n), b_value(g, k, n + 1u), b_value(g, k, n + 2u),
      b_value(g, k, n + 3u));
  }
  return vec4f(b_value(g, k, n), b_value(g, k + 1u, n), b_value(g, k + 2u, n),
    b_value(g, k + 3u, n));
}

// ---- staging the tiles ------------------------------------------------------------------------

fn load_tile_a(g: u32, m0: u32, k0: u32, lid: u32) {
  // TILE_M · TILE_K / 4 vectors, spread over the workgroup's threads.
  for (var u = lid; u < TILE_M * TILE_K / 4u; u += THREADS) {
    if (A_ALONG_K) {
      // Consecutive threads take consecutive vectors along k of one row (coalesced reads), and
      // scatter the four values into four k-rows of the tile.
      let m = u / (TILE_K / 4u);
      let k = (u - m * (TILE_K / 4u)) * 4u;
      let v = a_vec(g, m0 + m, k0 + k);
      for (var j = 0u; j < 4u; j++) {
        tile_a[(k + j) * (TILE_M / 4u) + m / 4u][m & 3u] = v[j];
      }
    } else {
      let k = u / (TILE_M / 4u);
      let m = (u - k * (TILE_M / 4u)) * 4u;
      tile_a[u] = a_vec(g, m0 + m, k0 + k);
    }
  }
}

fn load_tile_b(g: u32, k0: u32, n0: u32, lid: u32) {
  for (var u = lid; u < TILE_K * TILE_N / 4u; u += THREADS) {
    if (B_ALONG_N) {
      let k = u / (TILE_N / 4u);
      let n = (u - k * (TILE_N / 4u)) * 4u;
      tile_b[u] = b_vec(g, k0 + k, n0 + n);
    } else {
      let n = u / (TILE_K / 4u);
      let k = (u - n * (TILE_K / 4u)) * 4u;
      let v = b_vec(g, k0 + k, n0 + n);
      for (var j = 0u; j < 4u; j++) {
        tile_b[(k + j) * (TILE_N / 4u) + n / 4u][n & 3u] = v[j];
      }
    }
  }
}

// ---- the epilogue -----------------------------------------------------------------------------

fn activate(v: f32) -> f32 {
  if (ACTIVATION == ACT_RELU) {
    return max(v, 0.0);
  }
  if (ACTIVATION == ACT_LEAKY_RELU) {
    return select(p.slope * v, v, v > 0.0);
  }
  return v;
}

// Where C[g, m, n] is stored, and the channel whose bias it gets.
fn c_index(g: u32, m: u32, n: u32) -> u32 {
  if (MODE == MODE_CONV_FORWARD) {
    let pixels = p.out_h * p.out_w;
    let image = n / pixels;
    return (image * p.cout + g * p.M + m) * pixels + (n - image * pixels);
  }
  if (MODE == MODE_CONV_INPUT_GRAD) {
    let pixels = p.in_h * p.in_w;
    let image = n / pixels;
    return (image * p.cin + g * p.M + m) * pixels + (n - image * pixels);
  }
  if (MODE == MODE_CONV_WEIGHT_GRAD) {
    return (g * p.M + m) * p.N + n;
  }
  return (g * p.M + m) * p.N + n;
}

fn store_row(g: u32, m: u32, n: u32, row: vec4f) {
  if (m >= p.M) {
    return;
  }
  var extra = 0.0;
  if (HAS_BIAS) {
    extra = bias[g * p.M + m];
  }
  for (var j = 0u; j < 4u; j++) {
    if (n + j < p.N) {
      c[c_index(g, m, n + j)] = activate(row[j] + extra);
    }
  }
}

// ---- the product ------------------------------------------------------------------------------

@compute @workgroup_size(WG_X, WG_Y)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(local_invocation_id) local: vec3u,
  @builtin(local_invocation_index) lid: u32,
  @builtin(num_workgroups) nwg: vec3u,
) {
  // Products with more column tiles than a dispatch dimension holds (a large batch of images)
  // fold them into z: z = g · n_split + the fold.
  let g = wid.z / p.n_split;
  let m0 = wid.y * TILE_M;
  let n0 = (wid.x + (wid.z - g * p.n_split) * nwg.x) * TILE_N;
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  // Every thread runs every step (no early exit), so the barriers stay in uniform control flow.
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    load_tile_a(g, m0, k0, lid);
    load_tile_b(g, k0, n0, lid);
    workgroupBarrier();
    for (var k = 0u; k < TILE_K; k++) {
      let rows = tile_a[k * (TILE_M / 4u) + local.y];
      let columns = tile_b[k * (TILE_N / 4u) + local.x];
      acc0 = fma(vec4f(rows.x), columns, acc0);
      acc1 = fma(vec4f(rows.y), columns, acc1);
      acc2 = fma(vec4f(rows.z), columns, acc2);
      acc3 = fma(vec4f(rows.w), columns, acc3);
    }
    workgroupBarrier();
  }
  let m = m0 + local.y * 4u;
  let n = n0 + local.x * 4u;
  store_row(g, m, n, acc0);
  store_row(g, m + 1u, n, acc1);
  store_row(g, m + 2u, n, acc2);
  store_row(g, m + 3u, n, acc3);
}

// ---- backward helpers of a fused activation ---------------------------------------------------

// The derivative of ACTIVATION at an output y (y > 0 exactly where the input was > 0).
fn activation_slope(y: f32) -> f32 {
  if (ACTIVATION == ACT_NONE) {
    return 1.0;
  }
  let negative = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return select(negative, 1.0, y > 0.0);
}

// dz = dy · act′(y): a = dy, b = y, c = dz; p.N elements, 256 per workgroup along x and y.
@compute @workgroup_size(256)
fn activation_grad(@builtin(global_invocation_id) id: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = id.x + id.y * nwg.x * 256u;
  if (i >= p.N) {
    return;
  }
  c[i] = read_a(i) * activation_slope(read_b(i));
}

var<workgroup> partial: array<f32, 256>;

// db[channel] = Σ dy · act′(y) over images and pixels: a = dy, b = y (NCHW), c = db; one
// workgroup per channel, with p.images, p.cout (channels) and p.N (pixels per image).
@compute @workgroup_size(256)
fn bias_grad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let channel = wid.x;
  var sum = 0.0;
  for (var image = 0u; image < p.images; image++) {
    let base = (image * p.cout + channel) * p.N;
    for (var q = lid; q < p.N; q += 256u) {
      sum += read_a(base + q) * activation_slope(read_b(base + q));
    }
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var half = 128u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    c[channel] = partial[0];
  }
}
