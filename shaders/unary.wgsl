// Elementwise functions of one contiguous tensor: out[i] = f(a[i]).
// OP (compile-time) selects f; alpha and beta are its runtime parameters.

struct Params {
  n: u32,
  alpha: f32,
  beta: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const OP_COPY: u32 = 0u;
const OP_NEG: u32 = 1u;
const OP_RELU: u32 = 2u;
const OP_LEAKY_RELU: u32 = 3u;
const OP_SIGMOID: u32 = 4u;
const OP_TANH: u32 = 5u;
const OP_EXP: u32 = 6u;
const OP_LOG: u32 = 7u;
const OP_SQRT: u32 = 8u;
const OP_SQUARE: u32 = 9u;
const OP_ABS: u32 = 10u;
const OP_AFFINE: u32 = 11u; // alpha * x + beta
const OP_POW: u32 = 12u; // x ^ alpha
const OP_RECIPROCAL: u32 = 13u;
const OP_SIGN: u32 = 14u;
const OP_FILL: u32 = 15u; // beta, whatever x is
const OP_CLAMP: u32 = 16u; // clamp(x, alpha, beta)

fn stable_sigmoid(x: f32) -> f32 {
  // Two branches so that exp never overflows.
  if (x >= 0.0) {
    return 1.0 / (1.0 + exp(-x));
  }
  let e = exp(x);
  return e / (1.0 + e);
}

fn apply(x: f32) -> f32 {
  switch OP {
    case OP_COPY: { return x; }
    case OP_NEG: { return -x; }
    case OP_RELU: { return max(x, 0.0); }
    case OP_LEAKY_RELU: { return select(p.alpha * x, x, x > 0.0); }
    case OP_SIGMOID: { return stable_sigmoid(x); }
    case OP_TANH: { return tanh(clamp(x, -15.0, 15.0)); }
    case OP_EXP: { return exp(x); }
    case OP_LOG: { return log(x); }
    case OP_SQRT: { return sqrt(x); }
    case OP_SQUARE: { return x * x; }
    case OP_ABS: { return abs(x); }
    case OP_AFFINE: { return p.alpha * x + p.beta; }
    case OP_POW: { return pow(x, p.alpha); }
    case OP_RECIPROCAL: { return 1.0 / x; }
    case OP_SIGN: { return sign(x); }
    case OP_FILL: { return p.beta; }
    case OP_CLAMP: { return clamp(x, p.alpha, p.beta); }
    default: { return x; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) {
    return;
  }
  out[i] = apply(a[i]);
}
