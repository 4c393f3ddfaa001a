// Matrix products C[g, m, n] = Σ_k A[g, m, k] · B[g, k, n] from operands packed into rgba32float
// textures by pack.wgsl (A as vec4 along k, B as vec4 along n). Each thread computes an RM×4 block
// of C (RM ≤ 8), reading RM + 4 texels per 4 steps of k: no shared memory and no barriers, which suits
// both GPUs and CPU drivers, where texture loads are several times cheaper than buffer loads.
// MODE decides where C goes (the output layout of the product):
//   MODE_MATMUL             C = c[g] (M×N)
//   MODE_CONV_FORWARD       C = y (NCHW)
//   MODE_CONV_INPUT_GRAD    C = columns [groups, (cin/groups)·kh·kw, images·out_h·out_w], which
//                           col2im.wgsl folds into dx (also the transposed convolution's output)
//   MODE_CONV_WEIGHT_GRAD   C = dw ([cout, cin/groups, kh, kw])

// GemmParams, MODE_* and TEXTURE_WIDTH are declared in src/tensor/ops/gemm.ts.

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var a: texture_2d<f32>;
@group(0) @binding(2) var b: texture_2d<f32>;
// The output, addressed by vec4 so that aligned rows can be written in one store.
@group(0) @binding(3) var<storage, read_write> c: array<vec4f>;

fn texel(t: u32) -> vec2u {
  return vec2u(t % TEXTURE_WIDTH, t / TEXTURE_WIDTH);
}

// Where element (g, m, n) of C lies in the output buffer.
fn output_index(g: u32, m: u32, n: u32) -> u32 {
  if (MODE == MODE_CONV_FORWARD) {
    let pixels = p.out_h * p.out_w;
    return ((n / pixels) * p.cout + g * p.M + m) * pixels + n % pixels;
  }
  return (g * p.M + m) * p.N + n;
}

fn store(g: u32, m: u32, n: u32, value: f32) {
  let i = output_index(g, m, n);
  c[i / 4u][i % 4u] = value;
}

// With VEC4_STORE, four consecutive columns are four consecutive floats of the output (the
// host checks the layout), so they go out as one vector store.
fn store_row(g: u32, m: u32, n0: u32, n_end: u32, values: vec4f) {
  if (VEC4_STORE && n0 + 3u < n_end) {
    c[output_index(g, m, n0) / 4u] = values;
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j < n_end) {
      store(g, m, n0 + j, values[j]);
    }
  }
}

// Rows are unrolled by hand (a loop over an array of accumulators stays in memory on CPU
// drivers); rows at or beyond RM are compile-time dead and vanish.
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let g = gid.z;
  let column = gid.x; // texel column of B within this chunk
  let m0 = gid.y * RM;
  let b_texels_per_row = (p.n_count + 3u) / 4u;
  if (column >= b_texels_per_row || m0 >= p.M) {
    return;
  }
  let a_texels_per_row = p.K_padded / 4u;
  // Rows past M read a valid row; their results are never stored.
  let last = p.M - 1u;
  let a_base = g * p.M;
  let a0 = (a_base + min(m0 + 0u, last)) * a_texels_per_row;
  let a1 = (a_base + min(m0 + 1u, last)) * a_texels_per_row;
  let a2 = (a_base + min(m0 + 2u, last)) * a_texels_per_row;
  let a3 = (a_base + min(m0 + 3u, last)) * a_texels_per_row;
  let a4 = (a_base + min(m0 + 4u, last)) * a_texels_per_row;
  let a5 = (a_base + min(m0 + 5u, last)) * a_texels_per_row;
  let a6 = (a_base + min(m0 + 6u, last)) * a_texels_per_row;
  let a7 = (a_base + min(m0 + 7u, last)) * a_texels_per_row;
  var b_row = g * p.K_padded * b_texels_per_row + column;
  let b_step = b_texels_per_row;
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
  var acc2 = vec4f(0.0);
  var acc3 = vec4f(0.0);
  var acc4 = vec4f(0.0);
  var acc5 = vec4f(0.0);
  var acc6 = vec4f(0.0);
  var acc7 = vec4f(0.0);
  for (var k4 = 0u; k4 < a_texels_per_row; k4++) {
    let b0 = textureLoad(b, texel(b_row), 0);
    let b1 = textureLoad(b, texel(b_row + b_step), 0);
    let b2 = textureLoad(b, texel(b_row + 2u * b_step), 0);
    let b3 = textureLoad(b, texel(b_row + 3u * b_step), 0);
    b_row += 4u * b_step;
    let x0 = textureLoad(a, texel(a0 + k4), 0);
    acc0 = fma(vec4f(x0.x), b0, fma(vec4f(x0.y), b1, fma(vec4f(x0.z), b2, fma(vec4f(x0.w), b3, acc0))));
    if (RM > 1u) {
      let x1 = textureLoad(a, texel(a1 + k4), 0);
      acc1 = fma(vec4f(x1.x), b0, fma(vec4f(x1.y), b1, fma(vec4f(x1.z), b2, fma(vec4f(x1.w), b3, acc1))));
    }
    if (RM > 2u) {
      let x2 = textureLoad(a, texel(a2 + k4), 0);
      acc2 = fma(vec4f(x2.x), b0, fma(vec4f(x2.y), b1, fma(vec4f(x2.z), b2, fma(vec4f(x2.w), b3, acc2))));
    }
    if (RM > 3u) {
      let x3 = textureLoad(a, texel(a3 + k4), 0);
      acc3 = fma(vec4f(x3.x), b0, fma(vec4f(x3.y), b1, fma(vec4f(x3.z), b2, fma(vec4f(x3.w), b3, acc3))));
    }
    if (RM > 4u) {
      let x4 = textureLoad(a, texel(a4 + k4), 0);
      acc4 = fma(vec4f(x4.x), b0, fma(vec4f(x4.y), b1, fma(vec4f(x4.z), b2, fma(vec4f(x4.w), b3, acc4))));
    }
    if (RM > 5u) {
      let x5 = textureLoad(a, texel(a5 + k4), 0);
      acc5 = fma(vec4f(x5.x), b0, fma(vec4f(x5.y), b1, fma(vec4f(x5.z), b2, fma(vec4f(x5.w), b3, acc5))));
    }
    if (RM > 6u) {
      let x6 = textureLoad(a, texel(a6 + k4), 0);
      acc6 = fma(vec4f(x6.x), b0, fma(vec4f(x6.y), b1, fma(vec4f(x6.z), b2, fma(vec4f(x6.w), b3, acc6))));
    }
    if (RM > 7u) {
      let x7 = textureLoad(a, texel(a7 + k4), 0);
      acc7 = fma(vec4f(x7.x), b0, fma(vec4f(x7.y), b1, fma(vec4f(x7.z), b2, fma(vec4f(x7.w), b3, acc7))));
    }
  }
  let n0 = p.n_offset + column * 4u;
  let n_end = min(p.N, p.n_offset + p.n_count);
  let rows = array<vec4f, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m >= p.M) {
      break;
    }
    store_row(g, m, n0, n_end, rows[r]);
  }
}
