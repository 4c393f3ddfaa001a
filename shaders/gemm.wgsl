// Matrix products C[g, m, n] = Σ_k A[g, m, k] · B[g, k, n] with operands in rgba32float textures:
// A packed by pack.wgsl as vec4 along k, B either packed as vec4 along n (pack_b) or, for an
// implicit convolution (IMPLICIT, forward or weight gradient), the convolution's zero-padded
// input itself, stored by pack_image as vec4 along the channels. Each thread computes an RM×CN
// block of C (RM ≤ 8 rows, CN = 4 or 8 columns), reading RM + CN texels per 4 steps of k: no
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

// GemmParams, MODE_*, ACT_* and TEXTURE_WIDTH are declared in src/tensor/ops/gemm.ts.

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var a: texture_2d<f32>;
@group(0) @binding(2) var b: texture_2d<f32>;
// Scalar stores: a thread's four columns may straddle a row of the output, and two threads must
// never write parts of the same vector.
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
// The bias per row of C (ignored unless HAS_BIAS; the host binds some buffer regardless).
@group(0) @binding(4) var<storage, read> bias: array<f32>;

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
// Columns 4–7 of a thread that computes 8 (CN = 8, implicit convolutions only).
var<private> wide0: vec4f;
var<private> wide1: vec4f;
var<private> wide2: vec4f;
var<private> wide3: vec4f;
var<private> wide4: vec4f;
var<private> wide5: vec4f;
var<private> wide6: vec4f;
var<private> wide7: vec4f;
var<private> a0: u32;
var<private> a1: u32;
var<private> a2: u32;
var<private> a3: u32;
var<private> a4: u32;
var<private> a5: u32;
var<private> a6: u32;
var<private> a7: u32;

// One row's four steps of k: x holds A[m, k4·4 … k4·4+3], b0 … b3 the matching rows of B.
fn row_step(x: vec4f, b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f, acc: vec4f) -> vec4f {
  return fma(vec4f(x.x), b0, fma(vec4f(x.y), b1, fma(vec4f(x.z), b2, fma(vec4f(x.w), b3, acc))));
}

// Four steps of k: rows k4·4 … k4·4+3 of this thread's four columns of B are b0 … b3.
// Rows are unrolled by hand (a loop over an array of accumulators stays in memory on CPU drivers).
fn accumulate(k4: u32, b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f) {
  acc0 = row_step(textureLoad(a, texel(a0 + k4), 0), b0, b1, b2, b3, acc0);
  if (RM > 1u) {
    acc1 = row_step(textureLoad(a, texel(a1 + k4), 0), b0, b1, b2, b3, acc1);
  }
  if (RM > 2u) {
    acc2 = row_step(textureLoad(a, texel(a2 + k4), 0), b0, b1, b2, b3, acc2);
  }
  if (RM > 3u) {
    acc3 = row_step(textureLoad(a, texel(a3 + k4), 0), b0, b1, b2, b3, acc3);
  }
  if (RM > 4u) {
    acc4 = row_step(textureLoad(a, texel(a4 + k4), 0), b0, b1, b2, b3, acc4);
  }
  if (RM > 5u) {
    acc5 = row_step(textureLoad(a, texel(a5 + k4), 0), b0, b1, b2, b3, acc5);
  }
  if (RM > 6u) {
    acc6 = row_step(textureLoad(a, texel(a6 + k4), 0), b0, b1, b2, b3, acc6);
  }
  if (RM > 7u) {
    acc7 = row_step(textureLoad(a, texel(a7 + k4), 0), b0, b1, b2, b3, acc7);
  }
}

// `accumulate` for eight columns: c0 … c3 are rows of columns 4–7. Each texel of A now serves
// eight columns, which on lavapipe, where loads cost far more than arithmetic, pays.
fn accumulate_wide(
  k4: u32,
  b0: vec4f, b1: vec4f, b2: vec4f, b3: vec4f,
  c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f,
) {
  let x0 = textureLoad(a, texel(a0 + k4), 0);
  acc0 = row_step(x0, b0, b1, b2, b3, acc0);
  wide0 = row_step(x0, c0, c1, c2, c3, wide0);
  if (RM > 1u) {
    let x1 = textureLoad(a, texel(a1 + k4), 0);
    acc1 = row_step(x1, b0, b1, b2, b3, acc1);
    wide1 = row_step(x1, c0, c1, c2, c3, wide1);
  }
  if (RM > 2u) {
    let x2 = textureLoad(a, texel(a2 + k4), 0);
    acc2 = row_step(x2, b0, b1, b2, b3, acc2);
    wide2 = row_step(x2, c0, c1, c2, c3, wide2);
  }
  if (RM > 3u) {
    let x3 = textureLoad(a, texel(a3 + k4), 0);
    acc3 = row_step(x3, b0, b1, b2, b3, acc3);
    wide3 = row_step(x3, c0, c1, c2, c3, wide3);
  }
  if (RM > 4u) {
    let x4 = textureLoad(a, texel(a4 + k4), 0);
    acc4 = row_step(x4, b0, b1, b2, b3, acc4);
    wide4 = row_step(x4, c0, c1, c2, c3, wide4);
  }
  if (RM > 5u) {
    let x5 = textureLoad(a, texel(a5 + k4), 0);
    acc5 = row_step(x5, b0, b1, b2, b3, acc5);
    wide5 = row_step(x5, c0, c1, c2, c3, wide5);
  }
  if (RM > 6u) {
    let x6 = textureLoad(a, texel(a6 + k4), 0);
    acc6 = row_step(x6, b0, b1, b2, b3, acc6);
    wide6 = row_step(x6, c0, c1, c2, c3, wide6);
  }
  if (RM > 7u) {
    let x7 = textureLoad(a, texel(a7 + k4), 0);
    acc7 = row_step(x7, b0, b1, b2, b3, acc7);
    wide7 = row_step(x7, c0, c1, c2, c3, wide7);
  }
}

// The packed right operand: row k of B holds this chunk's columns as vec4 texels.
fn multiply_packed(g: u32, column: u32) {
  let b_texels_per_row = (p.n_count + 3u) / 4u;
  var b_row = g * p.K_padded * b_texels_per_row + column;
  let b_step = b_texels_per_row;
  for (var k4 = 0u; k4 < p.K_padded / 4u; k4++) {
    let b0 = textureLoad(b, texel(b_row), 0);
    let b1 = textureLoad(b, texel(b_row + b_step), 0);
    let b2 = textureLoad(b, texel(b_row + 2u * b_step), 0);
    let b3 = textureLoad(b, texel(b_row + 3u * b_step), 0);
    b_row += 4u * b_step;
    accumulate(k4, b0, b1, b2, b3);
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
// padded with zeros, so the loop needs no bounds checks.
fn multiply_implicit(g: u32, n0: u32) {
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
  }
  let plane = p.image_h * p.image_w;
  var k4 = 0u;
  for (var ky = 0u; ky < p.kernel_h; ky++) {
    for (var kx = 0u; kx < p.kernel_w; kx++) {
      var offset = ky * p.dilation_h * p.image_w + kx * p.dilation_w;
      for (var c4 = 0u; c4 < p.image_c4; c4++) {
        // Texel j holds four channels of pixel j; row i of B is channel i across the pixels.
        let t0 = textureLoad(b, texel(o0 + offset), 0);
        let t1 = textureLoad(b, texel(o1 + offset), 0);
        let t2 = textureLoad(b, texel(o2 + offset), 0);
        let t3 = textureLoad(b, texel(o3 + offset), 0);
        let b0 = vec4f(t0.x, t1.x, t2.x, t3.x);
        let b1 = vec4f(t0.y, t1.y, t2.y, t3.y);
        let b2 = vec4f(t0.z, t1.z, t2.z, t3.z);
        let b3 = vec4f(t0.w, t1.w, t2.w, t3.w);
        if (CN > 4u) {
          let t4 = textureLoad(b, texel(o4 + offset), 0);
          let t5 = textureLoad(b, texel(o5 + offset), 0);
          let t6 = textureLoad(b, texel(o6 + offset), 0);
          let t7 = textureLoad(b, texel(o7 + offset), 0);
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

// The weight gradient of an implicit convolution (groups = 1): k runs over output pixels, and
// the thread's four columns are four channels of one kernel tap, one texel of the padded input
// image per pixel. The host takes this path when rows are a multiple of 4 pixels, so the four
// pixels of a step lie side by side and the walk over pixels needs no division.
fn multiply_implicit_weight_grad(column: u32) {
  let tap = column / p.image_c4;
  let c4 = column % p.image_c4;
  let offset = (tap / p.kernel_w) * p.dilation_h * p.image_w + (tap % p.kernel_w) * p.dilation_w +
    c4 * p.image_h * p.image_w;
  var image = 0u;
  var oy = 0u;
  var ox = 0u;
  for (var k4 = 0u; k4 < p.K_padded / 4u; k4++) {
    let o = ((image * p.image_c4) * p.image_h + oy * p.stride_h) * p.image_w + ox * p.stride_w +
      offset;
    let b0 = textureLoad(b, texel(o), 0);
    let b1 = textureLoad(b, texel(o + p.stride_w), 0);
    let b2 = textureLoad(b, texel(o + 2u * p.stride_w), 0);
    let b3 = textureLoad(b, texel(o + 3u * p.stride_w), 0);
    accumulate(k4, b0, b1, b2, b3);
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

// Stores the RM×4 block of an implicit weight gradient: column texel `column` is channels
// 4·c4 … 4·c4+3 of one tap, and dw is [cout, cin, kh, kw]; padding channels are dropped.
fn store_weight_grad(m0: u32, column: u32) {
  let taps = p.kernel_h * p.kernel_w;
  let tap = column / p.image_c4;
  let first = (column % p.image_c4) * 4u;
  let rows = array<vec4f, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m >= p.M) {
      break;
    }
    for (var j = 0u; j < 4u; j++) {
      if (first + j < p.cin) {
        c[(m * p.cin + first + j) * taps + tap] = rows[r][j];
      }
    }
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
  if (ACTIVATION == ACT_RELU) {
    v = max(v, vec4f(0.0));
  } else if (ACTIVATION == ACT_LEAKY_RELU) {
    v = select(v * p.slope, v, v > vec4f(0.0));
  }
  return v;
}

// Stores an RM×4 block (`rows`, columns n0 … n0+3). With CONTIGUOUS_ROWS four consecutive columns
// are four consecutive floats of the output (the host checks the layout), so one base serves all.
fn store_block(g: u32, m0: u32, n0: u32, n_end: u32, rows: array<vec4f, 8>) {
  let base0 = column_base(g, n0);
  var base1 = base0 + 1u;
  var base2 = base0 + 2u;
  var base3 = base0 + 3u;
  if (!CONTIGUOUS_ROWS) {
    base1 = column_base(g, min(n0 + 1u, n_end - 1u));
    base2 = column_base(g, min(n0 + 2u, n_end - 1u));
    base3 = column_base(g, min(n0 + 3u, n_end - 1u));
  }
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m >= p.M) {
      break;
    }
    let v = epilogue(g, m, rows[r]);
    let offset = row_offset(g, m);
    c[base0 + offset] = v.x;
    if (n0 + 1u < n_end) {
      c[base1 + offset] = v.y;
    }
    if (n0 + 2u < n_end) {
      c[base2 + offset] = v.z;
    }
    if (n0 + 3u < n_end) {
      c[base3 + offset] = v.w;
    }
  }
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let g = gid.z;
  let column = gid.x; // texel column of B within this chunk (or CN/4 of them)
  let m0 = gid.y * RM;
  let n0 = p.n_offset + column * CN;
  let n_end = min(columns_of(g), p.n_offset + p.n_count);
  if (n0 >= n_end || m0 >= p.M) {
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
  if (IMPLICIT && MODE == MODE_CONV_WEIGHT_GRAD) {
    multiply_implicit_weight_grad(column);
    store_weight_grad(m0, column);
    return;
  }
  if (IMPLICIT) {
    multiply_implicit(g, n0);
  } else {
    multiply_packed(g, column);
  }
  store_block(g, m0, n0, n_end, array<vec4f, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7));
  if (CN > 4u && n0 + 4u < n_end) {
    let wide = array<vec4f, 8>(wide0, wide1, wide2, wide3, wide4, wide5, wide6, wide7);
    store_block(g, m0, n0 + 4u, n_end, wide);
  }
}
