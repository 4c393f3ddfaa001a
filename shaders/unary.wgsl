// Elementwise functions of one contiguous tensor: out[i] = f(a[i]), four elements per thread.
// OP (compile-time) selects f; alpha and beta are its runtime parameters. Buffers are bound in
// whole vec4s; the lanes past n belong to the tensor's pool bucket and are never read as data.

// UnaryParams and the OP_* codes are declared in src/tensor/ops/elementwise.ts.

@group(0) @binding(0) var<uniform> p: UnaryParams;
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4f>;

fn stable_sigmoid(x: vec4f) -> vec4f {
  // e^−|x| never overflows; the two forms agree where they meet.
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= vec4f(0.0));
}

fn apply(x: vec4f) -> vec4f {
  switch OP {
    case OP_COPY: { return x; }
    case OP_NEG: { return -x; }
    case OP_RELU: { return max(x, vec4f(0.0)); }
    case OP_LEAKY_RELU: { return select(p.alpha * x, x, x > vec4f(0.0)); }
    case OP_SIGMOID: { return stable_sigmoid(x); }
    case OP_TANH: { return tanh(clamp(x, vec4f(-15.0), vec4f(15.0))); }
    case OP_EXP: { return exp(x); }
    case OP_LOG: { return log(x); }
    case OP_SQRT: { return sqrt(x); }
    case OP_SQUARE: { return x * x; }
    case OP_ABS: { return abs(x); }
    case OP_AFFINE: { return p.alpha * x + p.beta; }
    case OP_POW: { return pow(x, vec4f(p.alpha)); }
    case OP_RECIPROCAL: { return 1.0 / x; }
    case OP_SIGN: { return sign(x); }
    case OP_FILL: { return vec4f(p.beta); }
    case OP_CLAMP: { return clamp(x, vec4f(p.alpha), vec4f(p.beta)); }
    // The 8-bit grid real = alpha·(q − beta), q ∈ [0, 255], of quantized models.
    case OP_QUANTIZE: {
      let q = clamp(round(x / p.alpha) + p.beta, vec4f(0.0), vec4f(255.0));
      return (q - p.beta) * p.alpha;
    }
    default: { return x; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i * 4u >= p.n) {
    return;
  }
  out[i] = apply(a[i]);
}
