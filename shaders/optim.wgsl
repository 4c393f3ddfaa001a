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
// Four elements at a time: a block of 256 elements is one workgroup of 64 invocations. On lavapipe,
// where every storage access costs about as much whatever its width, vector accesses made the
// AE's Adam step (1.05M parameters) ~2× faster than one element per invocation.
@group(0) @binding(1) var<storage, read_write> param: array<vec4f>;
@group(0) @binding(2) var<storage, read> grad: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> moment1: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> moment2: array<vec4f>;
// Elements to update in each workgroup's block: 256, fewer at the end of a parameter, 0 for the
// padding after it and for a parameter without a gradient this step, which must stay untouched.
@group(0) @binding(5) var<storage, read> block_limit: array<u32>;
// Adam's bias corrections of this step, 1 − β1^t and 1 − β2^t: the optimizer copies them from a
// table computed in float64, so no uniform changes from one step to the next.
@group(0) @binding(6) var<storage, read> corrections: array<f32>;

// The four elements this invocation updates: the index of their vector, and which of them are
// inside the parameter (the others keep their values); count 0 when there is nothing to do.
struct Elements {
  vector: u32,
  live: vec4<bool>,
  count: u32,
}

fn elements(wid: vec3u, nwg: vec3u, lane: u32) -> Elements {
  var e: Elements;
  let block = wid.x + wid.y * nwg.x;
  // 2-D grids round the workgroup count up past the last block.
  if (block >= arrayLength(&block_limit)) {
    return e;
  }
  let first = lane * 4u;
  let limit = block_limit[block];
  e.count = select(0u, min(limit - first, 4u), first < limit);
  e.vector = block * 64u + lane;
  e.live = vec4u(0u, 1u, 2u, 3u) < vec4u(e.count);
  return e;
}

@compute @workgroup_size(64)
fn adam(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let e = elements(wid, nwg, lane);
  if (e.count == 0u) {
    return;
  }
  let i = e.vector;
  let w0 = param[i];
  let m0 = moment1[i];
  let v0 = moment2[i];
  var w = w0;
  var g = grad[i];
  if (DECOUPLED) {
    w -= p.lr * p.weight_decay * w;
  } else {
    g += p.weight_decay * w;
  }
  let m = p.beta1 * m0 + (1.0 - p.beta1) * g;
  let v = p.beta2 * v0 + (1.0 - p.beta2) * g * g;
  moment1[i] = select(m0, m, e.live);
  moment2[i] = select(v0, v, e.live);
  let m_hat = m / corrections[0];
  let v_hat = v / corrections[1];
  param[i] = select(w0, w - p.lr * m_hat / (sqrt(v_hat) + p.eps), e.live);
}

@compute @workgroup_size(64)
fn sgd(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lane: u32,
) {
  let e = elements(wid, nwg, lane);
  if (e.count == 0u) {
    return;
  }
  let i = e.vector;
  let w0 = param[i];
  let v0 = moment1[i];
  let g = grad[i] + p.weight_decay * w0;
  let v = p.beta1 * v0 + g;
  moment1[i] = select(v0, v, e.live);
  param[i] = select(w0, w0 - p.lr * v, e.live);
}
