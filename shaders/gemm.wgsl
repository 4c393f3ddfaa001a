// Tiled matrix products with shared-memory tiles: C[g, m, n] = Σ_k A(g, m, k) · B(g, k, n).
// MODE picks how A and B are gathered from memory and where C goes, so one tiled core serves
// batched matmul and the three convolution products (implicit GEMM, as in tfjs-backend-webgpu):
//   MODE 0  matmul            A = a[g] (M×K, or K×M with TRANS_A), B = b[g] (K×N, or N×K with TRANS_B)
//   MODE 1  conv forward      A = weight,          B = im2col(x),  C = y
//   MODE 2  conv input grad   A = weightᵀ,         B = col2im(dy), C = dx   (also conv-transpose forward)
//   MODE 3  conv weight grad  A = dy,              B = im2col(x)ᵀ, C = dw
// A workgroup of 256 threads computes a TM×TN tile; each thread an RM×RN block of it.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  _pad0: u32,
  a_batch_stride: u32,
  b_batch_stride: u32,
  c_batch_stride: u32,
  _pad1: u32,
  images: u32,
  cin: u32,
  cout: u32,
  groups: u32,
  in_h: u32,
  in_w: u32,
  out_h: u32,
  out_w: u32,
  kernel_h: u32,
  kernel_w: u32,
  stride_h: u32,
  stride_w: u32,
  pad_h: i32,
  pad_w: i32,
  dilation_h: u32,
  dilation_w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const THREADS: u32 = 256u;
const THREAD_COLUMNS: u32 = TN / RN;

var<workgroup> tile_a: array<f32, TK * TM>; // [k][m]
var<workgroup> tile_b: array<f32, TK * TN>; // [k][n]

// The input pixel that kernel tap (ky, kx) of output pixel (oy, ox) reads, or -1 outside.
fn input_index(image: u32, channel: u32, oy: u32, ox: u32, ky: u32, kx: u32) -> i32 {
  let iy = i32(oy * p.stride_h + ky * p.dilation_h) - p.pad_h;
  let ix = i32(ox * p.stride_w + kx * p.dilation_w) - p.pad_w;
  if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
    return -1;
  }
  return i32(((image * p.cin + channel) * p.in_h + u32(iy)) * p.in_w + u32(ix));
}

// The output pixel whose tap (ky, kx) reads input pixel (iy, ix), or -1 if there is none.
fn output_index(image: u32, channel: u32, iy: u32, ix: u32, ky: u32, kx: u32) -> i32 {
  let ty = i32(iy) + p.pad_h - i32(ky * p.dilation_h);
  let tx = i32(ix) + p.pad_w - i32(kx * p.dilation_w);
  if (ty < 0 || tx < 0 || ty % i32(p.stride_h) != 0 || tx % i32(p.stride_w) != 0) {
    return -1;
  }
  let oy = u32(ty) / p.stride_h;
  let ox = u32(tx) / p.stride_w;
  if (oy >= p.out_h || ox >= p.out_w) {
    return -1;
  }
  return i32(((image * p.cout + channel) * p.out_h + oy) * p.out_w + ox);
}

fn load_a(g: u32, m: u32, k: u32) -> f32 {
  let taps = p.kernel_h * p.kernel_w;
  switch MODE {
    case 0u: {
      if (TRANS_A) {
        return a[g * p.a_batch_stride + k * p.M + m];
      }
      return a[g * p.a_batch_stride + m * p.K + k];
    }
    case 1u: {
      return a[(g * p.M + m) * p.K + k];
    }
    case 2u: {
      let cout_per_group = p.cout / p.groups;
      let co = k / taps;
      return a[((g * cout_per_group + co) * p.M + m) * taps + k % taps];
    }
    default: {
      let pixels = p.out_h * p.out_w;
      let image = k / pixels;
      let q = k % pixels;
      return a[((image * p.cout + g * p.M + m) * p.out_h + q / p.out_w) * p.out_w + q % p.out_w];
    }
  }
}

fn load_b(g: u32, k: u32, n: u32) -> f32 {
  let taps = p.kernel_h * p.kernel_w;
  var index = -1;
  switch MODE {
    case 0u: {
      if (TRANS_B) {
        return b[g * p.b_batch_stride + n * p.K + k];
      }
      return b[g * p.b_batch_stride + k * p.N + n];
    }
    case 1u: {
      let cin_per_group = p.cin / p.groups;
      let pixels = p.out_h * p.out_w;
      let image = n / pixels;
      let q = n % pixels;
      let r = k % taps;
      index = input_index(
        image, g * cin_per_group + k / taps, q / p.out_w, q % p.out_w, r / p.kernel_w, r % p.kernel_w,
      );
    }
    case 2u: {
      let cout_per_group = p.cout / p.groups;
      let pixels = p.in_h * p.in_w;
      let image = n / pixels;
      let q = n % pixels;
      let r = k % taps;
      index = output_index(
        image, g * cout_per_group + k / taps, q / p.in_w, q % p.in_w, r / p.kernel_w, r % p.kernel_w,
      );
    }
    default: {
      let cin_per_group = p.cin / p.groups;
      let pixels = p.out_h * p.out_w;
      let image = k / pixels;
      let q = k % pixels;
      let r = n % taps;
      index = input_index(
        image, g * cin_per_group + n / taps, q / p.out_w, q % p.out_w, r / p.kernel_w, r % p.kernel_w,
      );
    }
  }
  if (index < 0) {
    return 0.0;
  }
  return b[u32(index)];
}

fn store(g: u32, m: u32, n: u32, value: f32) {
  switch MODE {
    case 0u: {
      c[g * p.c_batch_stride + m * p.N + n] = value;
    }
    case 1u: {
      let pixels = p.out_h * p.out_w;
      let image = n / pixels;
      c[(image * p.cout + g * p.M + m) * pixels + n % pixels] = value;
    }
    case 2u: {
      let pixels = p.in_h * p.in_w;
      let image = n / pixels;
      c[(image * p.cin + g * p.M + m) * pixels + n % pixels] = value;
    }
    default: {
      c[(g * p.M + m) * p.N + n] = value;
    }
  }
}

@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let g = wid.z;
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  let tx = lid % THREAD_COLUMNS;
  let ty = lid / THREAD_COLUMNS;
  var acc: array<f32, RM * RN>;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var i = lid; i < TM * TK; i += THREADS) {
      let m = m0 + i / TK;
      let k = k0 + i % TK;
      var value = 0.0;
      if (m < p.M && k < p.K) {
        value = load_a(g, m, k);
      }
      tile_a[(i % TK) * TM + i / TK] = value;
    }
    for (var i = lid; i < TK * TN; i += THREADS) {
      let k = k0 + i / TN;
      let n = n0 + i % TN;
      var value = 0.0;
      if (n < p.N && k < p.K) {
        value = load_b(g, k, n);
      }
      tile_b[i] = value;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var a_regs: array<f32, RM>;
      var b_regs: array<f32, RN>;
      for (var r = 0u; r < RM; r++) {
        a_regs[r] = tile_a[kk * TM + ty * RM + r];
      }
      for (var s = 0u; s < RN; s++) {
        b_regs[s] = tile_b[kk * TN + tx * RN + s];
      }
      for (var r = 0u; r < RM; r++) {
        for (var s = 0u; s < RN; s++) {
          acc[r * RN + s] = fma(a_regs[r], b_regs[s], acc[r * RN + s]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < RM; r++) {
    let m = m0 + ty * RM + r;
    for (var s = 0u; s < RN; s++) {
      let n = n0 + tx * RN + s;
      if (m < p.M && n < p.N) {
        store(g, m, n, acc[r * RN + s]);
      }
    }
  }
}
