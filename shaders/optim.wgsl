// Optimizer updates of every parameter of a model in one dispatch, in place. The parameters,
// their gradients and the optimizer's state lie end to end in flat buffers (the optimizer copies
// parameters and gradients in before and the parameters out after), each parameter starting at a
// multiple of 256 elements so that every workgroup updates a block of one parameter only.
//   adam: Adam with L2 weight decay added to the gradient, or AdamW (DECOUPLED) which decays the
//         weights directly.
//   sgd:  SGD with momentum (PyTorch's form: v = μ·v + g; p -= lr·v).
//
// OptimParams is declared in src/nn/optim.ts.

@group(0) @binding(0) var<uniform> p: OptimParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;
// Elements to update in each workgroup's block: 256, fewer at the end of a parameter, 0 for the
// padding after it and for a parameter without a gradient this step, which must stay untouched.
@group(0) @binding(5) var<storage, read> block_limit: array<u32>;
// Adam's bias corrections of this step, 1 − β1^t and 1 − β2^t: the optimizer copies them from a
// table computed in float64, so no uniform changes from one step to the next.
@group(0) @binding(6) var<storage, read> corrections: array<f32>;

// The flat index this invocation updates, or -1 when it has nothing to do.
fn element(wid: vec3u, nwg: vec3u, lane: u32) -> i32 {
  let block = wid.x + wid.y * nwg.x;
  // 2-D grids round the workgroup count up past the last block.
  if (block >= arrayLength(&block_limit) || lane >= block_limit[block]) {
    return -1;
  }
  return i32(block * 256u + lane);
}

@compute @workgroup_size(256)
fn adam(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let index = element(wid, nwg, lane);
  if (index < 0) {
    return;
  }
  let i = u32(index);
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
  let m_hat = m / corrections[0];
  let v_hat = v / corrections[1];
  param[i] = w - p.lr * m_hat / (sqrt(v_hat) + p.eps);
}

@compute @workgroup_size(256)
fn sgd(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let index = element(wid, nwg, lane);
  if (index < 0) {
    return;
  }
  let i = u32(index);
  let g = grad[i] + p.weight_decay * param[i];
  let v = p.beta1 * moment1[i] + g;
  moment1[i] = v;
  param[i] = param[i] - p.lr * v;
}
