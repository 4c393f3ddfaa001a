// Matrix products C[g, m, n] = Σ_k A[g, m, k] · B[g, k, n] with operands in rgba32float textures:
// A packed by pack.wgsl as vec4 along k, B either packed as vec4 along n (pack_b) or, for an
// implicit convolution (IMPLICIT, forward or weight gradient), the convolution's zero-padded
// input itself, stored by pack_image as vec4 along the channels. Each thread computes an RM×CN
// block of C (RM ≤ 16 rows, CN = 4, 8 or 16 columns), reading RM + CN texels per 4 steps of k: no
// shared memory and no barriers, which suits both GPUs and CPU drivers, where texture loads are
// several times cheaper than buffer loads.
// MODE decides where C goes (the output layout of the product):
//   MODE_MATMUL             C = c[g] (M×N)
//   MODE_CONV_FORWARD       C = y (NCHW)
//   MODE_CONV_INPUT_GRAD    C = columns [groups, (cin/groups)·kh·kw, images·out_h·out_w], which
//                           col2im.wgsl folds into dx (also the transposed convolution's output)
//   MODE_CONV_WEIGHT_GRAD   C = dw ([cout, cin/groups, kh, kw])
// With PHASES (an implicit product only) the product is the adjoint of a stride-s convolution,
// split by output phase: group g = (ry, rx) computes the output pixels (s·jy + ry, s·jx + rx),
// each a stride-1 convolution of the input image with the kernel taps that reach that phase
// (see conv.ts). Every phase is then a dense product, with no column matrix to fold.
// The epilogue adds the bias of the output row when HAS_BIAS and applies ACTIVATION (ACT_* codes) on the way
// out, so a convolution layer's bias and activation cost no extra pass over its output.

// GemmParams, MODE_*, ACT_* and TEXTURE_WIDTH are declared in src/tensor/ops/gemm.ts;
// OperandTexture (the type of a and b) and load_operand in src/gpu/textures.ts.

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var a: OperandTexture;
@group(0) @binding(2) var b: OperandTexture;
// Scalar stores: a thread's four columns may straddle a row of the output, and two threads must
// never write parts of the same vector.
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
// The bias per row of C (ignored unless HAS_BIAS; the host binds some buffer regardless).
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// C again, as vectors (the host binds c here too). With CONTIGUOUS_ROWS a thread's four columns
// of one row are four consecutive floats, 16-byte aligned, that no other thread writes: a block
// that lies wholly inside C stores them with one vector store (see store_inside_block).
@group(0) @binding(5) var<storage, read_write> c4: array<vec4f>;

// Rows of C per thread at most (RM ≤ MAX_ROWS; the host picks RM, see rowsPerThread in gemm.ts).
const MAX_ROWS: u32 = 16u;

fn texel(t: u32) -> vec2u {
  return vec2u(t % TEXTURE_WIDTH, t / TEXTURE_WIDTH);
}

// The accumulators and the first A texel of each row: module-scope so that the packed and the
// implicit loops share `accumulate`. Rows at or beyond RM are compile-time dead and vanish.
// Private variables start at zero in every invocation.
var<private> acc0: vec4f;
var<private> acc1: vec4f;
var<private> acc2: vec4f;
var<private> acc3: vec4f;
var<private> acc4: vec4f;
var<private> acc5: vec4f;
var<private> acc6: vec4f;
var<private> acc7: vec4f;
var<private> acc8: vec4f;
var<private> acc9: vec4f;
var<private> acc10: vec4f;
var<private> acc11: vec4f;
var<private> acc12: vec4f;
var<private> acc13: vec4f;
var<private> acc14: vec4f;
var<private> acc15: vec4f;
// Columns 4–7 of a thread that computes 8 (CN = 8; not the implicit weight gradient).
var<private> wide0: vec4f;
var<private> wide1: vec4f;
var<private> wide2: vec4f;
var<private> wide3: vec4f;
var<private> wide4: vec4f;
var<private> wide5: vec4f;
var<private> wide6: vec4f;
var<private> wide7: vec4f;
var<private> wide8: vec4f;
var<private> wide9: vec4f;
var<private> wide10: vec4f;
var<private> wide11: vec4f;
var<private> wide12: vec4f;
var<private> wide13: vec4f;
var<private> wide14: vec4f;
var<private> wide15: vec4f;
// Columns 8–11 (wa*) and 12–15 (wb*) of a thread that computes 16 (CN = 16).
var<private> wa0: vec4f;
var<private> wb0: vec4f;
var<private> wa1: vec4f;
var<private> wb1: vec4f;
var<private> wa2: vec4f;
var<private> wb2: vec4f;
var<private> wa3: vec4f;
var<private> wb3: vec4f;
var<private> wa4: vec4f;
var<private> wb4: vec4f;
var<private> wa5: vec4f;
var<private> wb5: vec4f;
var<private> wa6: vec4f;
var<private> wb6: vec4f;
var<private> wa7: vec4f;
var<private> wb7: vec4f;
var<private> wa8: vec4f;
var<private> wb8: vec4f;
var<private> wa9: vec4f;
var<private> wb9: vec4f;
var<private> wa10: vec4f;
var<private> wb10: vec4f;
var<private> wa11: vec4f;
var<private> wb11: vec4f;
var<private> wa12: vec4f;
var<private> wb12: vec4f;
var<private> wa13: vec4f;
var<private> wb13: vec4f;
var<private> wa14: vec4f;
var<private> wb14: vec4f;
var<private> wa15: vec4f;
var<private> wb15: vec4f;
var<private> a0: u32;
var<private> a1: u32;
var<private> a2: u32;
var<private> a3: u32;
var<private> a4: u32;
var<private> a5: u32;
var<private> a6: u32;
var<private> a7: u32;
var<private> a8: u32;
var<private> a9: u32;
var<private> a10: u32;
var<private> a11: u32;
var<private> a12: u32;
var<private> a13: u32;
var<private> a14: u32;
var<private> a15: u32;

// One row's four steps of k: x holds A[m, k4·4 … k4·4+3], b0 … b3 the matching rows of B.
fn row_step(x: vec4f, b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f, acc: vec4f) -> vec4f {
  return fma(vec4f(x.x), b0, fma(vec4f(x.y), b1, fma(vec4f(x.z), b2, fma(vec4f(x.w), b3, acc))));
}

// The thread's RM texels of A for the current four steps of k, x_r = A[m0 + r, k4·4 … k4·4+3]
// (zero past RM): module-scope like the accumulators, loaded once by load_a and read by every
// group of columns. Loading all of them first, rather than each row's in its turn, also made
// products with blocks four columns wide ~13% faster on lavapipe.
var<private> x0: vec4f;
var<private> x1: vec4f;
var<private> x2: vec4f;
var<private> x3: vec4f;
var<private> x4: vec4f;
var<private> x5: vec4f;
var<private> x6: vec4f;
var<private> x7: vec4f;
var<private> x8: vec4f;
var<private> x9: vec4f;
var<private> x10: vec4f;
var<private> x11: vec4f;
var<private> x12: vec4f;
var<private> x13: vec4f;
var<private> x14: vec4f;
var<private> x15: vec4f;

// Row r of A, four steps of k from texel a_r + k4; zero for rows past RM (compile-time dead).
fn a_texel(r: u32, first: u32, k4: u32) -> vec4f {
  if (r >= RM) {
    return vec4f(0.0);
  }
  return load_operand(a, texel(first + k4));
}

fn load_a(k4: u32) {
  x0 = load_operand(a, texel(a0 + k4));
  x1 = a_texel(1u, a1, k4);
  x2 = a_texel(2u, a2, k4);
  x3 = a_texel(3u, a3, k4);
  x4 = a_texel(4u, a4, k4);
  x5 = a_texel(5u, a5, k4);
  x6 = a_texel(6u, a6, k4);
  x7 = a_texel(7u, a7, k4);
  x8 = a_texel(8u, a8, k4);
  x9 = a_texel(9u, a9, k4);
  x10 = a_texel(10u, a10, k4);
  x11 = a_texel(11u, a11, k4);
  x12 = a_texel(12u, a12, k4);
  x13 = a_texel(13u, a13, k4);
  x14 = a_texel(14u, a14, k4);
  x15 = a_texel(15u, a15, k4);
}

// Four steps of k for one group of four columns, whose rows of B (k4·4 … k4·4+3) are b0 … b3,
// through all RM rows. On lavapipe every f32 of a thread is a ymm register, of which there are 16:
// the accumulators live in memory either way, and running a group of columns through all the rows
// before the next keeps the group's 16 values of B in registers while the accumulators stream
// past. Row by row, every row reloaded the values of B of all the groups: this order made the
// AE's 16 × 16 blocks ~18% faster and 16 × 8 blocks ~24%. Rows are unrolled by hand (a loop over
// an array of accumulators stays in memory on CPU drivers).
fn columns_0_3(b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  acc0 = row_step(x0, b0, b1, b2, b3, acc0);
  if (RM > 1u) { acc1 = row_step(x1, b0, b1, b2, b3, acc1); }
  if (RM > 2u) { acc2 = row_step(x2, b0, b1, b2, b3, acc2); }
  if (RM > 3u) { acc3 = row_step(x3, b0, b1, b2, b3, acc3); }
  if (RM > 4u) { acc4 = row_step(x4, b0, b1, b2, b3, acc4); }
  if (RM > 5u) { acc5 = row_step(x5, b0, b1, b2, b3, acc5); }
  if (RM > 6u) { acc6 = row_step(x6, b0, b1, b2, b3, acc6); }
  if (RM > 7u) { acc7 = row_step(x7, b0, b1, b2, b3, acc7); }
  if (RM > 8u) { acc8 = row_step(x8, b0, b1, b2, b3, acc8); }
  if (RM > 9u) { acc9 = row_step(x9, b0, b1, b2, b3, acc9); }
  if (RM > 10u) { acc10 = row_step(x10, b0, b1, b2, b3, acc10); }
  if (RM > 11u) { acc11 = row_step(x11, b0, b1, b2, b3, acc11); }
  if (RM > 12u) { acc12 = row_step(x12, b0, b1, b2, b3, acc12); }
  if (RM > 13u) { acc13 = row_step(x13, b0, b1, b2, b3, acc13); }
  if (RM > 14u) { acc14 = row_step(x14, b0, b1, b2, b3, acc14); }
  if (RM > 15u) { acc15 = row_step(x15, b0, b1, b2, b3, acc15); }
}

// The same for columns 4–7.
fn columns_4_7(b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  wide0 = row_step(x0, b0, b1, b2, b3, wide0);
  if (RM > 1u) { wide1 = row_step(x1, b0, b1, b2, b3, wide1); }
  if (RM > 2u) { wide2 = row_step(x2, b0, b1, b2, b3, wide2); }
  if (RM > 3u) { wide3 = row_step(x3, b0, b1, b2, b3, wide3); }
  if (RM > 4u) { wide4 = row_step(x4, b0, b1, b2, b3, wide4); }
  if (RM > 5u) { wide5 = row_step(x5, b0, b1, b2, b3, wide5); }
  if (RM > 6u) { wide6 = row_step(x6, b0, b1, b2, b3, wide6); }
  if (RM > 7u) { wide7 = row_step(x7, b0, b1, b2, b3, wide7); }
  if (RM > 8u) { wide8 = row_step(x8, b0, b1, b2, b3, wide8); }
  if (RM > 9u) { wide9 = row_step(x9, b0, b1, b2, b3, wide9); }
  if (RM > 10u) { wide10 = row_step(x10, b0, b1, b2, b3, wide10); }
  if (RM > 11u) { wide11 = row_step(x11, b0, b1, b2, b3, wide11); }
  if (RM > 12u) { wide12 = row_step(x12, b0, b1, b2, b3, wide12); }
  if (RM > 13u) { wide13 = row_step(x13, b0, b1, b2, b3, wide13); }
  if (RM > 14u) { wide14 = row_step(x14, b0, b1, b2, b3, wide14); }
  if (RM > 15u) { wide15 = row_step(x15, b0, b1, b2, b3, wide15); }
}

// The same for columns 8–11.
fn columns_8_11(b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  wa0 = row_step(x0, b0, b1, b2, b3, wa0);
  if (RM > 1u) { wa1 = row_step(x1, b0, b1, b2, b3, wa1); }
  if (RM > 2u) { wa2 = row_step(x2, b0, b1, b2, b3, wa2); }
  if (RM > 3u) { wa3 = row_step(x3, b0, b1, b2, b3, wa3); }
  if (RM > 4u) { wa4 = row_step(x4, b0, b1, b2, b3, wa4); }
  if (RM > 5u) { wa5 = row_step(x5, b0, b1, b2, b3, wa5); }
  if (RM > 6u) { wa6 = row_step(x6, b0, b1, b2, b3, wa6); }
  if (RM > 7u) { wa7 = row_step(x7, b0, b1, b2, b3, wa7); }
  if (RM > 8u) { wa8 = row_step(x8, b0, b1, b2, b3, wa8); }
  if (RM > 9u) { wa9 = row_step(x9, b0, b1, b2, b3, wa9); }
  if (RM > 10u) { wa10 = row_step(x10, b0, b1, b2, b3, wa10); }
  if (RM > 11u) { wa11 = row_step(x11, b0, b1, b2, b3, wa11); }
  if (RM > 12u) { wa12 = row_step(x12, b0, b1, b2, b3, wa12); }
  if (RM > 13u) { wa13 = row_step(x13, b0, b1, b2, b3, wa13); }
  if (RM > 14u) { wa14 = row_step(x14, b0, b1, b2, b3, wa14); }
  if (RM > 15u) { wa15 = row_step(x15, b0, b1, b2, b3, wa15); }
}

// The same for columns 12–15.
fn columns_12_15(b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  wb0 = row_step(x0, b0, b1, b2, b3, wb0);
  if (RM > 1u) { wb1 = row_step(x1, b0, b1, b2, b3, wb1); }
  if (RM > 2u) { wb2 = row_step(x2, b0, b1, b2, b3, wb2); }
  if (RM > 3u) { wb3 = row_step(x3, b0, b1, b2, b3, wb3); }
  if (RM > 4u) { wb4 = row_step(x4, b0, b1, b2, b3, wb4); }
  if (RM > 5u) { wb5 = row_step(x5, b0, b1, b2, b3, wb5); }
  if (RM > 6u) { wb6 = row_step(x6, b0, b1, b2, b3, wb6); }
  if (RM > 7u) { wb7 = row_step(x7, b0, b1, b2, b3, wb7); }
  if (RM > 8u) { wb8 = row_step(x8, b0, b1, b2, b3, wb8); }
  if (RM > 9u) { wb9 = row_step(x9, b0, b1, b2, b3, wb9); }
  if (RM > 10u) { wb10 = row_step(x10, b0, b1, b2, b3, wb10); }
  if (RM > 11u) { wb11 = row_step(x11, b0, b1, b2, b3, wb11); }
  if (RM > 12u) { wb12 = row_step(x12, b0, b1, b2, b3, wb12); }
  if (RM > 13u) { wb13 = row_step(x13, b0, b1, b2, b3, wb13); }
  if (RM > 14u) { wb14 = row_step(x14, b0, b1, b2, b3, wb14); }
  if (RM > 15u) { wb15 = row_step(x15, b0, b1, b2, b3, wb15); }
}

// Four steps of k for the thread's four, eight or sixteen columns (CN): b*, c*, d*, e* are the
// rows of B of columns 0–3, 4–7, 8–11 and 12–15. Each texel of A serves all CN columns, which on
// lavapipe, where loads cost far more than arithmetic, pays.
fn accumulate(k4: u32, b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  load_a(k4);
  columns_0_3(b0, b1, b2, b3);
}

fn accumulate_wide(
  k4: u32,
  b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f,
  c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f,
) {
  load_a(k4);
  columns_0_3(b0, b1, b2, b3);
  columns_4_7(c0, c1, c2, c3);
}

fn accumulate16(
  k4: u32,
  b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f,
  c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f,
  d0: vec4f, d1: vec4f, d2: vec4f, d3: vec4f,
  e0: vec4f, e1: vec4f, e2: vec4f, e3: vec4f,
) {
  load_a(k4);
  columns_0_3(b0, b1, b2, b3);
  columns_4_7(c0, c1, c2, c3);
  columns_8_11(d0, d1, d2, d3);
  columns_12_15(e0, e1, e2, e3);
}

// The packed right operand: row k of B holds this chunk's columns as vec4 texels, and the thread's
// CN columns are CN / 4 texels side by side. A second texel past the end of a row reads the next
// row (or nothing); those columns are never stored.
// With SPLIT_K > 1 the k loop of a packed product is split into SPLIT_K parts, part `split` here:
// a product with few, long dot products (the weight gradient of a one-channel layer: 32 × 16
// outputs over k = 32768) then keeps every core busy. Each part stores its partial sums as a
// group of its own, which the host then sums (see gemm.ts).
fn multiply_packed(g: u32, split: u32, column: u32) {
  let b_texels_per_row = (p.n_count + 3u) / 4u;
  let k4_count = p.K_padded / 4u;
  let k4_per_split = (k4_count + SPLIT_K - 1u) / SPLIT_K;
  let k4_begin = split * k4_per_split;
  let k4_end = min(k4_begin + k4_per_split, k4_count);
  let b_step = b_texels_per_row;
  var b_row = g * p.K_padded * b_texels_per_row + column * (CN / 4u) + k4_begin * 4u * b_step;
  for (var k4 = k4_begin; k4 < k4_end; k4++) {
    let b0 = load_operand(b, texel(b_row));
    let b1 = load_operand(b, texel(b_row + b_step));
    let b2 = load_operand(b, texel(b_row + 2u * b_step));
    let b3 = load_operand(b, texel(b_row + 3u * b_step));
    if (CN > 8u) {
      let c0 = load_operand(b, texel(b_row + 1u));
      let c1 = load_operand(b, texel(b_row + 1u + b_step));
      let c2 = load_operand(b, texel(b_row + 1u + 2u * b_step));
      let c3 = load_operand(b, texel(b_row + 1u + 3u * b_step));
      let d0 = load_operand(b, texel(b_row + 2u));
      let d1 = load_operand(b, texel(b_row + 2u + b_step));
      let d2 = load_operand(b, texel(b_row + 2u + 2u * b_step));
      let d3 = load_operand(b, texel(b_row + 2u + 3u * b_step));
      let e0 = load_operand(b, texel(b_row + 3u));
      let e1 = load_operand(b, texel(b_row + 3u + b_step));
      let e2 = load_operand(b, texel(b_row + 3u + 2u * b_step));
      let e3 = load_operand(b, texel(b_row + 3u + 3u * b_step));
      accumulate16(k4, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, e0, e1, e2, e3);
    } else if (CN > 4u) {
      let c0 = load_operand(b, texel(b_row + 1u));
      let c1 = load_operand(b, texel(b_row + 1u + b_step));
      let c2 = load_operand(b, texel(b_row + 1u + 2u * b_step));
      let c3 = load_operand(b, texel(b_row + 1u + 3u * b_step));
      accumulate_wide(k4, b0, b1, b2, b3, c0, c1, c2, c3);
    } else {
      accumulate(k4, b0, b1, b2, b3);
    }
    b_row += 4u * b_step;
  }
}

// Under PHASES, group g is output phase (ry, rx) = (g / stride_w, g % stride_w), and this many
// output rows and columns belong to it.
fn phase_size(g: u32) -> vec2u {
  let ry = g / p.stride_w;
  let rx = g % p.stride_w;
  let rows = select(0u, (p.out_h - ry + p.stride_h - 1u) / p.stride_h, ry < p.out_h);
  let columns = select(0u, (p.out_w - rx + p.stride_w - 1u) / p.stride_w, rx < p.out_w);
  return vec2u(rows, columns);
}

// Columns of C in group g: N, or the pixels of phase g (the host sizes N for the largest).
fn columns_of(g: u32) -> u32 {
  if (PHASES) {
    let size = phase_size(g);
    return p.images * size.x * size.y;
  }
  return p.N;
}

// Output pixel n of group g as (image, row, column) of the output.
fn output_pixel(g: u32, n: u32) -> vec3u {
  if (PHASES) {
    let size = phase_size(g);
    let pixels = size.x * size.y;
    let q = n % pixels;
    return vec3u(n / pixels, q / size.y, q % size.y);
  }
  let pixels = p.out_h * p.out_w;
  let q = n % pixels;
  return vec3u(n / pixels, q / p.out_w, q % p.out_w);
}

// The texel of the padded input image (see pack_image in pack.wgsl) where output pixel n's window
// starts, for channels 0–3. Columns past the group's last repeat it; they are never stored.
fn window_origin(g: u32, n: u32) -> u32 {
  let pixel = output_pixel(g, min(n, columns_of(g) - 1u));
  var y = pixel.y * p.stride_h;
  var x = pixel.z * p.stride_w;
  if (PHASES) {
    // Phase (ry, rx) reads its first tap floor((r + pad) / s) rows and columns into the image.
    y = pixel.y + (g / p.stride_w + p.phase_pad_h) / p.stride_h;
    x = pixel.z + (g % p.stride_w + p.phase_pad_w) / p.stride_w;
  }
  return ((pixel.x * p.image_c4) * p.image_h + y) * p.image_w + x;
}

// An implicit convolution: k runs over (ky, kx, four channels), and the columns are CN output
// pixels, each reading one texel (four channels) of the padded input per step. The image is
// padded with zeros, so the loop needs no bounds checks. With SPLIT_K > 1 (a forward product with
// few outputs over a tall kernel, see kSplits in gemm.ts) part `split` runs its share of the
// kernel's rows.
fn multiply_implicit(g: u32, split: u32, n0: u32) {
  // With ALIGNED_PIXEL_ROWS (rows a multiple of CN pixels) the pixels lie side by side.
  let step = select(p.stride_w, 1u, PHASES);
  let o0 = window_origin(g, n0);
  var o1 = o0 + step;
  var o2 = o0 + 2u * step;
  var o3 = o0 + 3u * step;
  var o4 = o0 + 4u * step;
  var o5 = o0 + 5u * step;
  var o6 = o0 + 6u * step;
  var o7 = o0 + 7u * step;
  var o8 = o0 + 8u * step;
  var o9 = o0 + 9u * step;
  var o10 = o0 + 10u * step;
  var o11 = o0 + 11u * step;
  var o12 = o0 + 12u * step;
  var o13 = o0 + 13u * step;
  var o14 = o0 + 14u * step;
  var o15 = o0 + 15u * step;
  if (!ALIGNED_PIXEL_ROWS) {
    o1 = window_origin(g, n0 + 1u);
    o2 = window_origin(g, n0 + 2u);
    o3 = window_origin(g, n0 + 3u);
    if (CN > 4u) {
      o4 = window_origin(g, n0 + 4u);
      o5 = window_origin(g, n0 + 5u);
      o6 = window_origin(g, n0 + 6u);
      o7 = window_origin(g, n0 + 7u);
    }
    if (CN > 8u) {
      o8 = window_origin(g, n0 + 8u);
      o9 = window_origin(g, n0 + 9u);
      o10 = window_origin(g, n0 + 10u);
      o11 = window_origin(g, n0 + 11u);
      o12 = window_origin(g, n0 + 12u);
      o13 = window_origin(g, n0 + 13u);
      o14 = window_origin(g, n0 + 14u);
      o15 = window_origin(g, n0 + 15u);
    }
  }
  let plane = p.image_h * p.image_w;
  let rows_per_split = (p.kernel_h + SPLIT_K - 1u) / SPLIT_K;
  let ky_begin = split * rows_per_split;
  let ky_end = min(ky_begin + rows_per_split, p.kernel_h);
  var k4 = ky_begin * p.kernel_w * p.image_c4;
  for (var ky = ky_begin; ky < ky_end; ky++) {
    for (var kx = 0u; kx < p.kernel_w; kx++) {
      var offset = ky * p.dilation_h * p.image_w + kx * p.dilation_w;
      for (var c4 = 0u; c4 < p.image_c4; c4++) {
        // Texel j holds four channels of pixel j; row i of B is channel i across the pixels.
        let t0 = load_operand(b, texel(o0 + offset));
        let t1 = load_operand(b, texel(o1 + offset));
        let t2 = load_operand(b, texel(o2 + offset));
        let t3 = load_operand(b, texel(o3 + offset));
        let b0 = vec4f(t0.x, t1.x, t2.x, t3.x);
        let b1 = vec4f(t0.y, t1.y, t2.y, t3.y);
        let b2 = vec4f(t0.z, t1.z, t2.z, t3.z);
        let b3 = vec4f(t0.w, t1.w, t2.w, t3.w);
        if (CN > 8u) {
          let t4 = load_operand(b, texel(o4 + offset));
          let t5 = load_operand(b, texel(o5 + offset));
          let t6 = load_operand(b, texel(o6 + offset));
          let t7 = load_operand(b, texel(o7 + offset));
          let t8 = load_operand(b, texel(o8 + offset));
          let t9 = load_operand(b, texel(o9 + offset));
          let t10 = load_operand(b, texel(o10 + offset));
          let t11 = load_operand(b, texel(o11 + offset));
          let t12 = load_operand(b, texel(o12 + offset));
          let t13 = load_operand(b, texel(o13 + offset));
          let t14 = load_operand(b, texel(o14 + offset));
          let t15 = load_operand(b, texel(o15 + offset));
          accumulate16(
            k4,
            b0, b1, b2, b3,
            vec4f(t4.x, t5.x, t6.x, t7.x),
            vec4f(t4.y, t5.y, t6.y, t7.y),
            vec4f(t4.z, t5.z, t6.z, t7.z),
            vec4f(t4.w, t5.w, t6.w, t7.w),
            vec4f(t8.x, t9.x, t10.x, t11.x),
            vec4f(t8.y, t9.y, t10.y, t11.y),
            vec4f(t8.z, t9.z, t10.z, t11.z),
            vec4f(t8.w, t9.w, t10.w, t11.w),
            vec4f(t12.x, t13.x, t14.x, t15.x),
            vec4f(t12.y, t13.y, t14.y, t15.y),
            vec4f(t12.z, t13.z, t14.z, t15.z),
            vec4f(t12.w, t13.w, t14.w, t15.w),
          );
        } else if (CN > 4u) {
          let t4 = load_operand(b, texel(o4 + offset));
          let t5 = load_operand(b, texel(o5 + offset));
          let t6 = load_operand(b, texel(o6 + offset));
          let t7 = load_operand(b, texel(o7 + offset));
          accumulate_wide(
            k4,
            b0, b1, b2, b3,
            vec4f(t4.x, t5.x, t6.x, t7.x),
            vec4f(t4.y, t5.y, t6.y, t7.y),
            vec4f(t4.z, t5.z, t6.z, t7.z),
            vec4f(t4.w, t5.w, t6.w, t7.w),
          );
        } else {
          accumulate(k4, b0, b1, b2, b3);
        }
        offset += plane;
        k4++;
      }
    }
  }
}

// The image offset of texel column q of an implicit weight gradient: tap q / image_c4, channels
// 4·(q % image_c4) … +3. Columns past N repeat the last one; they are never stored.
fn weight_grad_offset(q: u32) -> u32 {
  let column = min(q, p.N / 4u - 1u);
  let tap = column / p.image_c4;
  let c4 = column % p.image_c4;
  return (tap / p.kernel_w) * p.dilation_h * p.image_w + (tap % p.kernel_w) * p.dilation_w +
    c4 * p.image_h * p.image_w;
}

// The weight gradient of an implicit convolution (groups = 1): k runs over output pixels, and
// each of the thread's CN / 4 texel columns is four channels of one kernel tap, one texel of the
// padded input image per pixel. The host takes this path when rows are a multiple of 4 pixels, so
// the four pixels of a step lie side by side and the walk over pixels needs no division.
fn multiply_implicit_weight_grad(column: u32) {
  let q0 = column * (CN / 4u);
  let f0 = weight_grad_offset(q0);
  let f1 = weight_grad_offset(q0 + 1u);
  let f2 = weight_grad_offset(q0 + 2u);
  let f3 = weight_grad_offset(q0 + 3u);
  let s = p.stride_w;
  var image = 0u;
  var oy = 0u;
  var ox = 0u;
  for (var k4 = 0u; k4 < p.K_padded / 4u; k4++) {
    let o = ((image * p.image_c4) * p.image_h + oy * p.stride_h) * p.image_w + ox * s;
    let b0 = load_operand(b, texel(o + f0));
    let b1 = load_operand(b, texel(o + f0 + s));
    let b2 = load_operand(b, texel(o + f0 + 2u * s));
    let b3 = load_operand(b, texel(o + f0 + 3u * s));
    if (CN > 8u) {
      let c0 = load_operand(b, texel(o + f1));
      let c1 = load_operand(b, texel(o + f1 + s));
      let c2 = load_operand(b, texel(o + f1 + 2u * s));
      let c3 = load_operand(b, texel(o + f1 + 3u * s));
      let d0 = load_operand(b, texel(o + f2));
      let d1 = load_operand(b, texel(o + f2 + s));
      let d2 = load_operand(b, texel(o + f2 + 2u * s));
      let d3 = load_operand(b, texel(o + f2 + 3u * s));
      let e0 = load_operand(b, texel(o + f3));
      let e1 = load_operand(b, texel(o + f3 + s));
      let e2 = load_operand(b, texel(o + f3 + 2u * s));
      let e3 = load_operand(b, texel(o + f3 + 3u * s));
      accumulate16(k4, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, e0, e1, e2, e3);
    } else if (CN > 4u) {
      let c0 = load_operand(b, texel(o + f1));
      let c1 = load_operand(b, texel(o + f1 + s));
      let c2 = load_operand(b, texel(o + f1 + 2u * s));
      let c3 = load_operand(b, texel(o + f1 + 3u * s));
      accumulate_wide(k4, b0, b1, b2, b3, c0, c1, c2, c3);
    } else {
      accumulate(k4, b0, b1, b2, b3);
    }
    ox += 4u;
    if (ox >= p.out_w) {
      ox = 0u;
      oy += 1u;
      if (oy == p.out_h) {
        oy = 0u;
        image += 1u;
      }
    }
  }
}

// Stores row m of texel column q of an implicit weight gradient: channels 4·c4 … 4·c4+3 of one
// tap, into dw [cout, cin, kh, kw] (the host takes this path only when cin is a multiple of 4).
fn store_weight_grad_row(m: u32, q: u32, v: vec4f) {
  if (m >= p.M || q >= p.N / 4u) {
    return;
  }
  let taps = p.kernel_h * p.kernel_w;
  let first = (m * p.cin + (q % p.image_c4) * 4u) * taps + q / p.image_c4;
  c[first] = v.x;
  c[first + taps] = v.y;
  c[first + 2u * taps] = v.z;
  c[first + 3u * taps] = v.w;
}

// Stores the RM rows of texel column q: the accumulators acc*, wide*, wa* or wb* (`which`).
fn store_weight_grad(m0: u32, q: u32, which: u32) {
  store_weight_grad_row(m0, q, pick(which, acc0, wide0, wa0, wb0));
  if (RM > 1u) {
    store_weight_grad_row(m0 + 1u, q, pick(which, acc1, wide1, wa1, wb1));
  }
  if (RM > 2u) {
    store_weight_grad_row(m0 + 2u, q, pick(which, acc2, wide2, wa2, wb2));
  }
  if (RM > 3u) {
    store_weight_grad_row(m0 + 3u, q, pick(which, acc3, wide3, wa3, wb3));
  }
  if (RM > 4u) {
    store_weight_grad_row(m0 + 4u, q, pick(which, acc4, wide4, wa4, wb4));
  }
  if (RM > 5u) {
    store_weight_grad_row(m0 + 5u, q, pick(which, acc5, wide5, wa5, wb5));
  }
  if (RM > 6u) {
    store_weight_grad_row(m0 + 6u, q, pick(which, acc6, wide6, wa6, wb6));
  }
  if (RM > 7u) {
    store_weight_grad_row(m0 + 7u, q, pick(which, acc7, wide7, wa7, wb7));
  }
  if (RM > 8u) {
    store_weight_grad_row(m0 + 8u, q, pick(which, acc8, wide8, wa8, wb8));
  }
  if (RM > 9u) {
    store_weight_grad_row(m0 + 9u, q, pick(which, acc9, wide9, wa9, wb9));
  }
  if (RM > 10u) {
    store_weight_grad_row(m0 + 10u, q, pick(which, acc10, wide10, wa10, wb10));
  }
  if (RM > 11u) {
    store_weight_grad_row(m0 + 11u, q, pick(which, acc11, wide11, wa11, wb11));
  }
  if (RM > 12u) {
    store_weight_grad_row(m0 + 12u, q, pick(which, acc12, wide12, wa12, wb12));
  }
  if (RM > 13u) {
    store_weight_grad_row(m0 + 13u, q, pick(which, acc13, wide13, wa13, wb13));
  }
  if (RM > 14u) {
    store_weight_grad_row(m0 + 14u, q, pick(which, acc14, wide14, wa14, wb14));
  }
  if (RM > 15u) {
    store_weight_grad_row(m0 + 15u, q, pick(which, acc15, wide15, wa15, wb15));
  }
}

// Where column n of group g starts in the output buffer; row m adds row_offset(g, m).
// Integer division is slow on CPU drivers (no vector instruction), so each thread splits its
// columns once and its rows cost one multiply-add each.
fn column_base(g: u32, n: u32) -> u32 {
  if (MODE == MODE_CONV_FORWARD) {
    // C = y in NCHW: columns are pixels, rows are channels.
    let pixel = output_pixel(g, n);
    var y = pixel.y;
    var x = pixel.z;
    if (PHASES) {
      y = y * p.stride_h + g / p.stride_w;
      x = x * p.stride_w + g % p.stride_w;
    }
    return ((pixel.x * p.cout) * p.out_h + y) * p.out_w + x;
  }
  return n;
}

// The output row of row m of group g: phases share the output's channels; groups do not.
fn output_row(g: u32, m: u32) -> u32 {
  return select(g * p.M + m, m, PHASES);
}

fn row_offset(g: u32, m: u32) -> u32 {
  if (MODE == MODE_CONV_FORWARD) {
    return output_row(g, m) * p.out_h * p.out_w;
  }
  return output_row(g, m) * p.N;
}

// Bias and activation of one row's four values.
fn epilogue(g: u32, m: u32, values: vec4f) -> vec4f {
  var v = values;
  if (HAS_BIAS) {
    v += vec4f(bias[output_row(g, m)]);
  }
  return activate(v);
}

fn activate(values: vec4f) -> vec4f {
  if (ACTIVATION == ACT_RELU) {
    return max(values, vec4f(0.0));
  }
  if (ACTIVATION == ACT_LEAKY_RELU) {
    return select(values * p.slope, values, values > vec4f(0.0));
  }
  return values;
}

// Stores row m's four values (columns n0 … n0+3, at `bases` plus the row's offset).
fn store_row(g: u32, m: u32, n0: u32, n_end: u32, bases: vec4u, values: vec4f) {
  if (m >= p.M) {
    return;
  }
  let v = epilogue(g, m, values);
  let offset = row_offset(g, m);
  c[bases.x + offset] = v.x;
  if (n0 + 1u < n_end) {
    c[bases.y + offset] = v.y;
  }
  if (n0 + 2u < n_end) {
    c[bases.z + offset] = v.z;
  }
  if (n0 + 3u < n_end) {
    c[bases.w + offset] = v.w;
  }
}

// The output offsets of columns n0 … n0+3 (for row 0; row m adds row_offset(g, m)).
fn column_bases(g: u32, n0: u32) -> vec4u {
  let base0 = column_base(g, n0);
  if (CONTIGUOUS_ROWS) {
    return vec4u(base0, base0 + 1u, base0 + 2u, base0 + 3u);
  }
  return vec4u(base0, column_base(g, n0 + 1u), column_base(g, n0 + 2u), column_base(g, n0 + 3u));
}

// Where the four column groups of a thread's block start: the output offsets of its columns
// n0 + 4·j … n0 + 4·j + 3 for row 0 (groups past CN are unused).
struct BlockBases {
  group0: vec4u,
  group1: vec4u,
  group2: vec4u,
  group3: vec4u,
}

// Stores one row's four values at `bases` plus the row's offset, after `shift` (the row's bias)
// and the activation, with no bounds checks.
fn store_inside(offset: u32, bases: vec4u, shift: f32, values: vec4f) {
  let v = activate(values + vec4f(shift));
  if (CONTIGUOUS_ROWS) {
    c4[(bases.x + offset) / 4u] = v;
  } else {
    c[bases.x + offset] = v.x;
    c[bases.y + offset] = v.y;
    c[bases.z + offset] = v.z;
    c[bases.w + offset] = v.w;
  }
}

// Row m of a block inside C: its four column groups' values x, y, z, w (as many as CN has).
fn store_inside_row(g: u32, m: u32, bases: BlockBases, x: vec4f, y: vec4f, z: vec4f, w: vec4f) {
  let offset = row_offset(g, m);
  var shift = 0.0;
  if (HAS_BIAS) {
    shift = bias[output_row(g, m)];
  }
  store_inside(offset, bases.group0, shift, x);
  if (CN > 4u) {
    store_inside(offset, bases.group1, shift, y);
  }
  if (CN > 8u) {
    store_inside(offset, bases.group2, shift, z);
    store_inside(offset, bases.group3, shift, w);
  }
}

// Stores the whole RM×CN block of a thread whose block lies wholly inside C, which is most of
// them: the rows and column groups unrolled, each row's bias read once, no bounds checks, and
// vector stores with CONTIGUOUS_ROWS.
fn store_inside_block(g: u32, m0: u32, n0: u32) {
  var bases: BlockBases;
  bases.group0 = column_bases(g, n0);
  if (CN > 4u) {
    bases.group1 = column_bases(g, n0 + 4u);
  }
  if (CN > 8u) {
    bases.group2 = column_bases(g, n0 + 8u);
    bases.group3 = column_bases(g, n0 + 12u);
  }
  store_inside_row(g, m0, bases, acc0, wide0, wa0, wb0);
  if (RM > 1u) {
    store_inside_row(g, m0 + 1u, bases, acc1, wide1, wa1, wb1);
  }
  if (RM > 2u) {
    store_inside_row(g, m0 + 2u, bases, acc2, wide2, wa2, wb2);
  }
  if (RM > 3u) {
    store_inside_row(g, m0 + 3u, bases, acc3, wide3, wa3, wb3);
  }
  if (RM > 4u) {
    store_inside_row(g, m0 + 4u, bases, acc4, wide4, wa4, wb4);
  }
  if (RM > 5u) {
    store_inside_row(g, m0 + 5u, bases, acc5, wide5, wa5, wb5);
  }
  if (RM > 6u) {
    store_inside_row(g, m0 + 6u, bases, acc6, wide6, wa6, wb6);
  }
  if (RM > 7u) {
    store_inside_row(g, m0 + 7u, bases, acc7, wide7, wa7, wb7);
  }
  if (RM > 8u) {
    store_inside_row(g, m0 + 8u, bases, acc8, wide8, wa8, wb8);
  }
  if (RM > 9u) {
    store_inside_row(g, m0 + 9u, bases, acc9, wide9, wa9, wb9);
  }
  if (RM > 10u) {
    store_inside_row(g, m0 + 10u, bases, acc10, wide10, wa10, wb10);
  }
  if (RM > 11u) {
    store_inside_row(g, m0 + 11u, bases, acc11, wide11, wa11, wb11);
  }
  if (RM > 12u) {
    store_inside_row(g, m0 + 12u, bases, acc12, wide12, wa12, wb12);
  }
  if (RM > 13u) {
    store_inside_row(g, m0 + 13u, bases, acc13, wide13, wa13, wb13);
  }
  if (RM > 14u) {
    store_inside_row(g, m0 + 14u, bases, acc14, wide14, wa14, wb14);
  }
  if (RM > 15u) {
    store_inside_row(g, m0 + 15u, bases, acc15, wide15, wa15, wb15);
  }
}

// Stores an RM×4 block, columns n0 … n0+3: the accumulators acc*, wide*, wa* or wb* (`which`).
// With CONTIGUOUS_ROWS four consecutive columns are four consecutive floats of the output (the host
// checks the layout), so one base serves all. Rows are unrolled, like `accumulate`: indexing an
// array of the accumulators by a loop variable would copy them all to memory first.
fn store_block(g: u32, m0: u32, n0: u32, n_end: u32, which: u32) {
  let base0 = column_base(g, n0);
  var bases = vec4u(base0, base0 + 1u, base0 + 2u, base0 + 3u);
  if (!CONTIGUOUS_ROWS) {
    bases.y = column_base(g, min(n0 + 1u, n_end - 1u));
    bases.z = column_base(g, min(n0 + 2u, n_end - 1u));
    bases.w = column_base(g, min(n0 + 3u, n_end - 1u));
  }
  store_row(g, m0, n0, n_end, bases, pick(which, acc0, wide0, wa0, wb0));
  if (RM > 1u) {
    store_row(g, m0 + 1u, n0, n_end, bases, pick(which, acc1, wide1, wa1, wb1));
  }
  if (RM > 2u) {
    store_row(g, m0 + 2u, n0, n_end, bases, pick(which, acc2, wide2, wa2, wb2));
  }
  if (RM > 3u) {
    store_row(g, m0 + 3u, n0, n_end, bases, pick(which, acc3, wide3, wa3, wb3));
  }
  if (RM > 4u) {
    store_row(g, m0 + 4u, n0, n_end, bases, pick(which, acc4, wide4, wa4, wb4));
  }
  if (RM > 5u) {
    store_row(g, m0 + 5u, n0, n_end, bases, pick(which, acc5, wide5, wa5, wb5));
  }
  if (RM > 6u) {
    store_row(g, m0 + 6u, n0, n_end, bases, pick(which, acc6, wide6, wa6, wb6));
  }
  if (RM > 7u) {
    store_row(g, m0 + 7u, n0, n_end, bases, pick(which, acc7, wide7, wa7, wb7));
  }
  if (RM > 8u) {
    store_row(g, m0 + 8u, n0, n_end, bases, pick(which, acc8, wide8, wa8, wb8));
  }
  if (RM > 9u) {
    store_row(g, m0 + 9u, n0, n_end, bases, pick(which, acc9, wide9, wa9, wb9));
  }
  if (RM > 10u) {
    store_row(g, m0 + 10u, n0, n_end, bases, pick(which, acc10, wide10, wa10, wb10));
  }
  if (RM > 11u) {
    store_row(g, m0 + 11u, n0, n_end, bases, pick(which, acc11, wide11, wa11, wb11));
  }
  if (RM > 12u) {
    store_row(g, m0 + 12u, n0, n_end, bases, pick(which, acc12, wide12, wa12, wb12));
  }
  if (RM > 13u) {
    store_row(g, m0 + 13u, n0, n_end, bases, pick(which, acc13, wide13, wa13, wb13));
  }
  if (RM > 14u) {
    store_row(g, m0 + 14u, n0, n_end, bases, pick(which, acc14, wide14, wa14, wb14));
  }
  if (RM > 15u) {
    store_row(g, m0 + 15u, n0, n_end, bases, pick(which, acc15, wide15, wa15, wb15));
  }
}

// The accumulator of set `which` (0–3: acc, wide, wa, wb).
fn pick(which: u32, x: vec4f, y: vec4f, z: vec4f, w: vec4f) -> vec4f {
  if (which == 1u) {
    return y;
  }
  if (which == 2u) {
    return z;
  }
  if (which == 3u) {
    return w;
  }
  return x;
}

// A workgroup is GROUP_X × GROUP_Y threads: 64, as high as the product has rows of threads (up to
// 8), or 8 for a small product (see workgroupShape in gemm.ts).
@compute @workgroup_size(GROUP_X, GROUP_Y)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let g = gid.z;
  // With SPLIT_K the parts of the k loop lie along x after the columns, so that the lanes of a
  // workgroup fill even when the columns are few; stores address each part's partial sums as a
  // group of its own.
  let column_threads = (p.n_count + CN - 1u) / CN;
  let column = select(gid.x, gid.x % column_threads, SPLIT_K > 1u); // texel column of B (or CN/4)
  let split = select(0u, gid.x / column_threads, SPLIT_K > 1u);
  if (split >= SPLIT_K) {
    return;
  }
  let store_group = g * SPLIT_K + split;
  let m0 = gid.y * RM;
  let n0 = p.n_offset + column * CN;
  let n_end = min(columns_of(g), p.n_offset + p.n_count);
  if (n0 >= n_end || m0 >= p.M) {
    return;
  }
  // BLOCKS_INSIDE: this dispatch computes the blocks that lie wholly inside C and stores them with
  // no bounds checks; otherwise it computes the others (the host dispatches both where a product
  // has both). Keeping the checked stores out of the first pipeline's code made lavapipe store
  // 1M outputs of a k = 16 product ~1.3 ms faster.
  let inside = m0 + RM <= p.M && n0 + CN <= n_end;
  let weight_grad = IMPLICIT && MODE == MODE_CONV_WEIGHT_GRAD;
  if (!weight_grad && inside != BLOCKS_INSIDE) {
    return;
  }
  let a_texels_per_row = p.K_padded / 4u;
  // Rows past M read a valid row; their results are never stored.
  let last = p.M - 1u;
  let a_base = g * p.M;
  a0 = (a_base + min(m0 + 0u, last)) * a_texels_per_row;
  a1 = (a_base + min(m0 + 1u, last)) * a_texels_per_row;
  a2 = (a_base + min(m0 + 2u, last)) * a_texels_per_row;
  a3 = (a_base + min(m0 + 3u, last)) * a_texels_per_row;
  a4 = (a_base + min(m0 + 4u, last)) * a_texels_per_row;
  a5 = (a_base + min(m0 + 5u, last)) * a_texels_per_row;
  a6 = (a_base + min(m0 + 6u, last)) * a_texels_per_row;
  a7 = (a_base + min(m0 + 7u, last)) * a_texels_per_row;
  a8 = (a_base + min(m0 + 8u, last)) * a_texels_per_row;
  a9 = (a_base + min(m0 + 9u, last)) * a_texels_per_row;
  a10 = (a_base + min(m0 + 10u, last)) * a_texels_per_row;
  a11 = (a_base + min(m0 + 11u, last)) * a_texels_per_row;
  a12 = (a_base + min(m0 + 12u, last)) * a_texels_per_row;
  a13 = (a_base + min(m0 + 13u, last)) * a_texels_per_row;
  a14 = (a_base + min(m0 + 14u, last)) * a_texels_per_row;
  a15 = (a_base + min(m0 + 15u, last)) * a_texels_per_row;
  if (weight_grad) {
    multiply_implicit_weight_grad(column);
    let q0 = column * (CN / 4u);
    store_weight_grad(m0, q0, 0u);
    if (CN > 4u) {
      store_weight_grad(m0, q0 + 1u, 1u);
    }
    if (CN > 8u) {
      store_weight_grad(m0, q0 + 2u, 2u);
      store_weight_grad(m0, q0 + 3u, 3u);
    }
    return;
  }
  if (IMPLICIT) {
    multiply_implicit(g, split, n0);
  } else {
    multiply_packed(g, split, column);
  }
  if (BLOCKS_INSIDE) {
    store_inside_block(store_group, m0, n0);
    return;
  }
  store_block(store_group, m0, n0, n_end, 0u);
  if (CN > 4u && n0 + 4u < n_end) {
    store_block(store_group, m0, n0 + 4u, n_end, 1u);
  }
  if (CN > 8u && n0 + 8u < n_end) {
    store_block(store_group, m0, n0 + 8u, n_end, 2u);
  }
  if (CN > 8u && n0 + 12u < n_end) {
    store_block(store_group, m0, n0 + 12u, n_end, 3u);
  }
}

// ---- the parts of a split implicit product ----------------------------------------------------

// The parts' sums of a split convolution forward product: [images, SPLIT_K, M, out_h · out_w],
// each part's rows stored as the channels of a group of its own.
@group(0) @binding(6) var<storage, read> parts: array<f32>;

// y = the sum of the parts, then the bias and the activation (the epilogue the split product
// skipped): one thread per element of y [images, M, out_h, out_w].
@compute @workgroup_size(256)
fn add_parts(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let per_image = p.M * p.out_h * p.out_w;
  if (i >= p.images * per_image) {
    return;
  }
  let image = i / per_image;
  let r = i - image * per_image;
  var sum = 0.0;
  for (var part = 0u; part < SPLIT_K; part++) {
    sum += parts[(image * SPLIT_K + part) * per_image + r];
  }
  c[i] = epilogue(0u, r / (p.out_h * p.out_w), vec4f(sum)).x;
}
