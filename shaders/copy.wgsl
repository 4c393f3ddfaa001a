// Strided copy between views: dst[dst_offset + Σ c_d·dst_strides_d] = src[src_offset + Σ c_d·src_strides_d]
// for every coordinate c of `shape`. Permute, slice, concat, pad and broadcast are all this.

// CopyParams is declared in src/tensor/ops/shape.ts.

@group(0) @binding(0) var<uniform> p: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn dim(v: array<vec4u, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) {
    return;
  }
  var rest = i;
  var s = p.src_offset;
  var t = p.dst_offset;
  // The rank is a constant (RANK) so that the loop unrolls and reads the sizes and strides at
  // constant indices: dynamic indices into the uniform arrays made a copy on lavapipe many times
  // slower (the AE's broadcast of its loss gradient to the image: 2.1 ms, now under 0.3).
  for (var d = i32(RANK) - 1; d >= 0; d--) {
    let size = dim(p.shape, u32(d));
    let coord = rest % size;
    rest = rest / size;
    s += coord * dim(p.src_strides, u32(d));
    t += coord * dim(p.dst_strides, u32(d));
  }
  dst[t] = src[s];
}
