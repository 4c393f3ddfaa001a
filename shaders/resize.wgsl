// Resizing NCHW planes: nearest (PyTorch's "nearest": source = floor(o · in/out)) and bilinear
// with half-pixel centres (align_corners = false). Backward kernels gather over the output pixels
// that read each input pixel.

// ResizeParams is declared in src/tensor/ops/pool.ts.

@group(0) @binding(0) var<uniform> p: ResizeParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

fn nearest_source(o: u32, scale: f32, size: u32) -> u32 {
  return min(u32(floor(f32(o) * scale)), size - 1u);
}

// The two source positions and the weight of the second for output position o.
struct Taps {
  first: u32,
  second: u32,
  weight: f32,
}

fn bilinear_taps(o: u32, scale: f32, size: u32) -> Taps {
  let position = max((f32(o) + 0.5) * scale - 0.5, 0.0);
  let first = min(u32(floor(position)), size - 1u);
  let second = min(first + 1u, size - 1u);
  return Taps(first, second, position - f32(first));
}

// How much output position o takes from source position i.
fn bilinear_weight(o: u32, i: u32, scale: f32, size: u32) -> f32 {
  let taps = bilinear_taps(o, scale, size);
  var weight = 0.0;
  if (taps.first == i) {
    weight += 1.0 - taps.weight;
  }
  if (taps.second == i) {
    weight += taps.weight;
  }
  return weight;
}

// Output positions that may read source position i: a safe superset, checked by the weights.
fn candidates(i: u32, scale: f32, out_size: u32) -> vec2u {
  let first = max(floor((f32(i) - 1.0) / scale) - 1.0, 0.0);
  let last = min(ceil((f32(i) + 2.0) / scale) + 1.0, f32(out_size));
  return vec2u(u32(first), u32(max(last, first)));
}

@compute @workgroup_size(256)
fn nearest_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let out_pixels = p.out_h * p.out_w;
  let plane = i / out_pixels;
  let sy = nearest_source((i % out_pixels) / p.out_w, p.scale_h, p.in_h);
  let sx = nearest_source(i % p.out_w, p.scale_w, p.in_w);
  dst[i] = src[(plane * p.in_h + sy) * p.in_w + sx];
}

@compute @workgroup_size(256)
fn nearest_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let in_pixels = p.in_h * p.in_w;
  let plane = i / in_pixels;
  let iy = (i % in_pixels) / p.in_w;
  let ix = i % p.in_w;
  let rows = candidates(iy, p.scale_h, p.out_h);
  let cols = candidates(ix, p.scale_w, p.out_w);
  var sum = 0.0;
  for (var oy = rows.x; oy < rows.y; oy++) {
    if (nearest_source(oy, p.scale_h, p.in_h) != iy) {
      continue;
    }
    for (var ox = cols.x; ox < cols.y; ox++) {
      if (nearest_source(ox, p.scale_w, p.in_w) == ix) {
        sum += src[(plane * p.out_h + oy) * p.out_w + ox];
      }
    }
  }
  dst[i] = sum;
}

@compute @workgroup_size(256)
fn bilinear_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let out_pixels = p.out_h * p.out_w;
  let plane = i / out_pixels;
  let ty = bilinear_taps((i % out_pixels) / p.out_w, p.scale_h, p.in_h);
  let tx = bilinear_taps(i % p.out_w, p.scale_w, p.in_w);
  let base = plane * p.in_h * p.in_w;
  let top = mix(src[base + ty.first * p.in_w + tx.first], src[base + ty.first * p.in_w + tx.second], tx.weight);
  let bottom = mix(src[base + ty.second * p.in_w + tx.first], src[base + ty.second * p.in_w + tx.second], tx.weight);
  dst[i] = mix(top, bottom, ty.weight);
}

@compute @workgroup_size(256)
fn bilinear_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let in_pixels = p.in_h * p.in_w;
  let plane = i / in_pixels;
  let iy = (i % in_pixels) / p.in_w;
  let ix = i % p.in_w;
  let rows = candidates(iy, p.scale_h, p.out_h);
  let cols = candidates(ix, p.scale_w, p.out_w);
  var sum = 0.0;
  for (var oy = rows.x; oy < rows.y; oy++) {
    let wy = bilinear_weight(oy, iy, p.scale_h, p.in_h);
    if (wy == 0.0) {
      continue;
    }
    for (var ox = cols.x; ox < cols.y; ox++) {
      let wx = bilinear_weight(ox, ix, p.scale_w, p.in_w);
      sum += wy * wx * src[(plane * p.out_h + oy) * p.out_w + ox];
    }
  }
  dst[i] = sum;
}
