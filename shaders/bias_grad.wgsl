// The bias gradient of a convolution with a fused activation: db[c] = Σ over images and pixels of
// dy · act′, where dy is the gradient of the activated NCHW output y and act′ is read from y (as in
// pack.wgsl's read_src). One workgroup per channel sums through shared memory, so the gradient
// before the activation is never stored.

// BiasGradParams and ACT_* are declared in src/tensor/ops/gemm.ts.

@group(0) @binding(0) var<uniform> p: BiasGradParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

const WORKGROUP: u32 = 256u;

var<workgroup> partial: array<f32, WORKGROUP>;

fn pre_activation_grad(i: u32) -> f32 {
  if (ACTIVATION == ACT_NONE) {
    return dy[i];
  }
  let slope = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return dy[i] * select(slope, 1.0, y[i] > 0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let channel = wid.x;
  var sum = 0.0;
  for (var image = 0u; image < p.images; image++) {
    let base = (image * p.channels + channel) * p.pixels;
    for (var q = lid; q < p.pixels; q += WORKGROUP) {
      sum += pre_activation_grad(base + q);
    }
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      partial[lid] += partial[lid + half];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    db[channel] = partial[0];
  }
}
