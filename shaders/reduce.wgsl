// Sum or max over chosen axes. Output element o is reduced from the input elements
// base(o) + offset(r) for r in [0, reduce_count), where base walks the kept axes and offset the
// reduced ones. One workgroup per output element cooperates through shared memory; with SMALL
// (few elements per output) one thread per output does the whole sum instead.

// ReduceParams, OP_SUM and OP_MAX are declared in src/tensor/ops/reduce.ts.

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const WORKGROUP: u32 = 256u;

var<workgroup> partial: array<f32, WORKGROUP>;

fn dim(v: array<vec4u, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

fn kept_offset(index: u32) -> u32 {
  var rest = index;
  var offset = 0u;
  for (var d = i32(p.kept_rank) - 1; d >= 0; d--) {
    let size = dim(p.kept_shape, u32(d));
    offset += (rest % size) * dim(p.kept_strides, u32(d));
    rest = rest / size;
  }
  return offset;
}

fn reduced_offset(index: u32) -> u32 {
  // With INNER the reduced axes are the trailing, contiguous ones.
  if (INNER) {
    return index;
  }
  // With TWO_AXES the reduced axes, merged where contiguous, are at most two (sum over batch and
  // space of an NCHW tensor, for example): straight-line arithmetic instead of a loop.
  if (TWO_AXES) {
    let inner = p.reduced_shape[0].y;
    return (index / inner) * p.reduced_strides[0].x + (index % inner) * p.reduced_strides[0].y;
  }
  var rest = index;
  var offset = 0u;
  for (var d = i32(p.reduced_rank) - 1; d >= 0; d--) {
    let size = dim(p.reduced_shape, u32(d));
    offset += (rest % size) * dim(p.reduced_strides, u32(d));
    rest = rest / size;
  }
  return offset;
}

fn identity() -> f32 {
  if (OP == OP_MAX) {
    return -3.402823e38;
  }
  return 0.0;
}

fn combine(x: f32, y: f32) -> f32 {
  if (OP == OP_MAX) {
    return max(x, y);
  }
  return x + y;
}

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let group = wid.x + wid.y * nwg.x;
  if (SMALL) {
    let o = group * WORKGROUP + lid;
    if (o >= p.out_count) {
      return;
    }
    let base = kept_offset(o);
    var acc = identity();
    for (var r = 0u; r < p.reduce_count; r++) {
      acc = combine(acc, src[base + reduced_offset(r)]);
    }
    dst[o] = acc * p.scale;
    return;
  }
  // group is uniform across the workgroup, so this early exit keeps the barriers uniform.
  if (group >= p.out_count) {
    return;
  }
  let base = kept_offset(group);
  var acc = identity();
  for (var r = lid; r < p.reduce_count; r += WORKGROUP) {
    acc = combine(acc, src[base + reduced_offset(r)]);
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) {
      partial[lid] = combine(partial[lid], partial[lid + stride]);
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    dst[group] = partial[0] * p.scale;
  }
}
