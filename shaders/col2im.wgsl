// Folds the column matrix of a convolution's input gradient into an NCHW image: every input pixel
// sums the columns of the output pixels and kernel taps that read it. It is a gather, one thread
// per input pixel, so no atomics are needed.
// columns: [groups, (cin/groups)·kh·kw, images·out_h·out_w], the product of gemm.wgsl's
// MODE_CONV_INPUT_GRAD.
// As the last pass of a transposed convolution it is also the epilogue: bias[channel] when
// HAS_BIAS, then ACTIVATION (ACT_* codes), so those cost no pass of their own.

// GemmParams and ACT_* are declared in src/tensor/ops/gemm.ts: the same block as the product's.

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> columns: array<f32>;
@group(0) @binding(2) var<storage, read_write> image: array<f32>;
// The bias per channel (ignored unless HAS_BIAS; the host binds some buffer regardless).
@group(0) @binding(3) var<storage, read> bias: array<f32>;

fn epilogue(channel: u32, sum: f32) -> f32 {
  var v = sum;
  if (HAS_BIAS) {
    v += bias[channel];
  }
  if (ACTIVATION == ACT_RELU) {
    v = max(v, 0.0);
  } else if (ACTIVATION == ACT_LEAKY_RELU) {
    v = select(v * p.slope, v, v > 0.0);
  }
  return v;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.images * p.cin * p.in_h * p.in_w) {
    return;
  }
  let pixels = p.in_h * p.in_w;
  let ix = i % p.in_w;
  let iy = (i / p.in_w) % p.in_h;
  let channel = (i / pixels) % p.cin;
  let img = i / (pixels * p.cin);
  let cin_per_group = p.cin / p.groups;
  let g = channel / cin_per_group;
  let ci = channel % cin_per_group;
  let taps = p.kernel_h * p.kernel_w;
  let out_pixels = p.out_h * p.out_w;
  let n_columns = p.images * out_pixels;
  let row_base = (g * cin_per_group + ci) * taps;
  var sum = 0.0;
  if (p.dilation_h == 1u && p.dilation_w == 1u) {
    // Without dilation the taps that reach this pixel are every stride-th one, starting at
    // (i + pad) mod stride, and from the one of the last output row (column) on: visit only
    // those, with exact divisions. (A transposed convolution of a 1×1 input visits one tap.)
    let ty0 = u32(i32(iy) + p.pad_h);
    let tx0 = u32(i32(ix) + p.pad_w);
    let y_reach = (p.out_h - 1u) * p.stride_h;
    let x_reach = (p.out_w - 1u) * p.stride_w;
    let ky_first = select(ty0 % p.stride_h, ty0 - y_reach, ty0 >= y_reach);
    let kx_first = select(tx0 % p.stride_w, tx0 - x_reach, tx0 >= x_reach);
    for (var ky = ky_first; ky < p.kernel_h && ky <= ty0; ky += p.stride_h) {
      let oy = (ty0 - ky) / p.stride_h;
      for (var kx = kx_first; kx < p.kernel_w && kx <= tx0; kx += p.stride_w) {
        let ox = (tx0 - kx) / p.stride_w;
        let row = row_base + ky * p.kernel_w + kx;
        sum += columns[row * n_columns + img * out_pixels + oy * p.out_w + ox];
      }
    }
    image[i] = epilogue(channel, sum);
    return;
  }
  for (var ky = 0u; ky < p.kernel_h; ky++) {
    let ty = i32(iy) + p.pad_h - i32(ky * p.dilation_h);
    if (ty < 0 || ty % i32(p.stride_h) != 0) {
      continue;
    }
    let oy = u32(ty) / p.stride_h;
    if (oy >= p.out_h) {
      continue;
    }
    for (var kx = 0u; kx < p.kernel_w; kx++) {
      let tx = i32(ix) + p.pad_w - i32(kx * p.dilation_w);
      if (tx < 0 || tx % i32(p.stride_w) != 0) {
        continue;
      }
      let ox = u32(tx) / p.stride_w;
      if (ox >= p.out_w) {
        continue;
      }
      let row = row_base + ky * p.kernel_w + kx;
      sum += columns[row * n_columns + img * out_pixels + oy * p.out_w + ox];
    }
  }
  image[i] = epilogue(channel, sum);
}
