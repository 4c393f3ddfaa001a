// 2-D max and average pooling over NCHW planes, forward and backward. Backward kernels gather:
// each input pixel sums the gradients of the output windows that cover it, so no atomics are needed.
// Average pooling divides by the full window (padding counts as zeros).

// PoolParams is declared in src/tensor/ops/pool.ts.

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// Max pooling's argmax: the winning pixel's index within its plane. Kept as integers: as f32 bit
// patterns these small numbers would be subnormals, which a GPU may flush to zero.
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// First and one-past-last output row (or column) whose window covers input row i.
fn covering(i: u32, pad: i32, kernel: u32, stride: u32, out_size: u32) -> vec2u {
  let shifted = i32(i) + pad;
  let first = max(shifted - i32(kernel) + i32(stride), 0) / i32(stride);
  let last = min(shifted / i32(stride) + 1, i32(out_size));
  return vec2u(u32(first), u32(max(last, first)));
}

@compute @workgroup_size(256)
fn max_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let out_pixels = p.out_h * p.out_w;
  let plane = i / out_pixels;
  let oy = (i % out_pixels) / p.out_w;
  let ox = i % p.out_w;
  var best = -3.402823e38;
  var best_index = 0u;
  for (var ky = 0u; ky < p.kernel_h; ky++) {
    let iy = i32(oy * p.stride_h + ky) - p.pad_h;
    if (iy < 0 || iy >= i32(p.in_h)) {
      continue;
    }
    for (var kx = 0u; kx < p.kernel_w; kx++) {
      let ix = i32(ox * p.stride_w + kx) - p.pad_w;
      if (ix < 0 || ix >= i32(p.in_w)) {
        continue;
      }
      let pixel = u32(iy) * p.in_w + u32(ix);
      let value = src[plane * p.in_h * p.in_w + pixel];
      if (value > best) {
        best = value;
        best_index = pixel;
      }
    }
  }
  dst[i] = best;
  argmax[i] = best_index;
}

@compute @workgroup_size(256)
fn max_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let in_pixels = p.in_h * p.in_w;
  let plane = i / in_pixels;
  let pixel = i % in_pixels;
  let rows = covering(pixel / p.in_w, p.pad_h, p.kernel_h, p.stride_h, p.out_h);
  let cols = covering(pixel % p.in_w, p.pad_w, p.kernel_w, p.stride_w, p.out_w);
  var sum = 0.0;
  for (var oy = rows.x; oy < rows.y; oy++) {
    for (var ox = cols.x; ox < cols.y; ox++) {
      let o = (plane * p.out_h + oy) * p.out_w + ox;
      if (argmax[o] == pixel) {
        sum += src[o];
      }
    }
  }
  dst[i] = sum;
}

@compute @workgroup_size(256)
fn avg_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let out_pixels = p.out_h * p.out_w;
  let plane = i / out_pixels;
  let oy = (i % out_pixels) / p.out_w;
  let ox = i % p.out_w;
  var sum = 0.0;
  for (var ky = 0u; ky < p.kernel_h; ky++) {
    let iy = i32(oy * p.stride_h + ky) - p.pad_h;
    if (iy < 0 || iy >= i32(p.in_h)) {
      continue;
    }
    for (var kx = 0u; kx < p.kernel_w; kx++) {
      let ix = i32(ox * p.stride_w + kx) - p.pad_w;
      if (ix >= 0 && ix < i32(p.in_w)) {
        sum += src[(plane * p.in_h + u32(iy)) * p.in_w + u32(ix)];
      }
    }
  }
  dst[i] = sum / f32(p.kernel_h * p.kernel_w);
}

@compute @workgroup_size(256)
fn avg_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let in_pixels = p.in_h * p.in_w;
  let plane = i / in_pixels;
  let pixel = i % in_pixels;
  let rows = covering(pixel / p.in_w, p.pad_h, p.kernel_h, p.stride_h, p.out_h);
  let cols = covering(pixel % p.in_w, p.pad_w, p.kernel_w, p.stride_w, p.out_w);
  var sum = 0.0;
  for (var oy = rows.x; oy < rows.y; oy++) {
    for (var ox = cols.x; ox < cols.y; ox++) {
      sum += src[(plane * p.out_h + oy) * p.out_w + ox];
    }
  }
  dst[i] = sum / f32(p.kernel_h * p.kernel_w);
}
