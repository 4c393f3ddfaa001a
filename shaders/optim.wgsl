// Optimizer updates, one dispatch per parameter tensor, in place.
//   adam: Adam with L2 weight decay added to the gradient, or AdamW (DECOUPLED) which decays the
//         weights directly. Bias corrections are computed on the CPU for the current step.
//   sgd:  SGD with momentum (PyTorch's form: v = μ·v + g; p -= lr·v).

// OptimParams is declared in src/nn/optim.ts.

@group(0) @binding(0) var<uniform> p: OptimParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  var w = param[i];
  var g = grad[i];
  if (DECOUPLED) {
    w -= p.lr * p.weight_decay * w;
  } else {
    g += p.weight_decay * w;
  }
  let m = p.beta1 * moment1[i] + (1.0 - p.beta1) * g;
  let v = p.beta2 * moment2[i] + (1.0 - p.beta2) * g * g;
  moment1[i] = m;
  moment2[i] = v;
  let m_hat = m / p.bias_correction1;
  let v_hat = v / p.bias_correction2;
  param[i] = w - p.lr * m_hat / (sqrt(v_hat) + p.eps);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= p.n) {
    return;
  }
  let g = grad[i] + p.weight_decay * param[i];
  let v = p.beta1 * moment1[i] + g;
  moment1[i] = v;
  param[i] = param[i] - p.lr * v;
}
