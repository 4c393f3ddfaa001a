// Elementwise functions of two tensors with broadcasting: out[i] = f(a[ia], b[ib]).
// Broadcast dimensions have stride 0. With CONTIGUOUS both operands have the output's shape and
// the index arithmetic is skipped. With BLOCKS each operand's elements form one run of output
// axes broadcast over the rest (a bias [1, C, 1, 1], a row, a scalar), so its index is
// (i / inner) % count: two integer operations instead of a loop over every axis.

// BinaryParams and the OP_* codes are declared in src/tensor/ops/elementwise.ts.

@group(0) @binding(0) var<uniform> p: BinaryParams;
// Addressed by vec4: every invocation computes four consecutive output elements and stores them
// as one vec4, so that no two invocations write parts of the same vec4 (a data race on Metal and
// D3D12, where a component store may be a read-modify-write of the whole vector).
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4f>;

fn dim(v: array<vec4u, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

fn apply(x: vec4f, y: vec4f) -> vec4f {
  let zero = vec4f(0.0);
  switch OP {
    case OP_ADD: { return x + y; }
    case OP_SUB: { return x - y; }
    case OP_MUL: { return x * y; }
    case OP_DIV: { return x / y; }
    case OP_MAX: { return max(x, y); }
    case OP_MIN: { return min(x, y); }
    case OP_RELU_GRAD: { return select(zero, x, y > zero); }
    case OP_LEAKY_RELU_GRAD: { return select(p.alpha * x, x, y > zero); }
    case OP_SIGMOID_GRAD: { return x * y * (1.0 - y); }
    case OP_TANH_GRAD: { return x * (1.0 - y * y); }
    case OP_ABS_GRAD: { return x * sign(y); }
    case OP_GREATER: { return select(zero, vec4f(1.0), x > y); }
    default: { return x; }
  }
}

// The operands' element indices for output element i.
fn operand_indices(i: u32) -> vec2u {
  if (BLOCKS) {
    return vec2u((i / p.a_inner) % p.a_count, (i / p.b_inner) % p.b_count);
  }
  var ia = 0u;
  var ib = 0u;
  var rest = i;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let size = dim(p.shape, u32(d));
    let coord = rest % size;
    rest = rest / size;
    ia += coord * dim(p.a_strides, u32(d));
    ib += coord * dim(p.b_strides, u32(d));
  }
  return vec2u(ia, ib);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // Output vec4 i holds elements 4i … 4i + 3; lanes past n fall in the buffers' padding.
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i * 4u >= p.n) {
    return;
  }
  if (CONTIGUOUS) {
    out[i] = apply(a[i], b[i]);
    return;
  }
  var x = vec4f(0.0);
  var y = vec4f(0.0);
  for (var lane = 0u; lane < 4u; lane++) {
    let e = i * 4u + lane;
    if (e < p.n) {
      let indices = operand_indices(e);
      x[lane] = a[indices.x / 4u][indices.x % 4u];
      y[lane] = b[indices.y / 4u][indices.y % 4u];
    }
  }
  out[i] = apply(x, y);
}
