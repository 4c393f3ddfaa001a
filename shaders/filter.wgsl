// One pass of a separable filter over NCHW planes: a 1-D correlation along x (AXIS_X) or y
// (AXIS_Y), out[.., i] = Σ_t taps[t] · in[.., i + t − radius], with zeros outside the image.
// Its adjoint is the same pass with reversed taps and radius' = count − 1 − radius.

// FilterParams, AXIS_X and AXIS_Y are declared in src/tensor/ops/filter.ts.

@group(0) @binding(0) var<uniform> p: FilterParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) {
    return;
  }
  let x = i32(i % p.width);
  let y = i32((i / p.width) % p.height);
  var position = x;
  var size = i32(p.width);
  var step = 1;
  if (AXIS == AXIS_Y) {
    position = y;
    size = i32(p.height);
    step = i32(p.width);
  }
  var sum = 0.0;
  for (var t = 0u; t < p.tap_count; t++) {
    let source = position + i32(t) - p.radius;
    if (source >= 0 && source < size) {
      sum += p.taps[t / 4u][t % 4u] * src[i32(i) + (source - position) * step];
    }
  }
  dst[i] = sum;
}
