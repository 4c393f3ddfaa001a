// The bias gradient of a convolution with a fused activation: db[c] = Σ over images and pixels of
// dy · act′, where dy is the gradient of the activated NCHW output y and act′ is read from y (as in
// pack.wgsl's read_src).
//   main:          one workgroup per channel sums dy through shared memory, so the gradient
//                  before the activation is never stored.
//   from_row_sums: adds the row sums that pack.wgsl's pack_image_rows (or pack_image_rows4)
//                  stored while packing dy (through the activation) as an image, one thread per
//                  channel: `pixels` is then the rows of one texel plane.

// BiasGradParams and ACT_* are declared in src/tensor/ops/gemm.ts.

@group(0) @binding(0) var<uniform> p: BiasGradParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

// THREADS (64 or 256) threads sum one channel (see biasGradThreads in gemm.ts). On
// lavapipe every barrier costs a pass over the whole workgroup, so the partial sums are added by
// one thread after a single barrier rather than in a tree.
var<workgroup> partial: array<f32, THREADS>;

fn pre_activation_grad(i: u32) -> f32 {
  if (ACTIVATION == ACT_NONE) {
    return dy[i];
  }
  let slope = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return dy[i] * select(slope, 1.0, y[i] > 0.0);
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let channel = wid.x;
  var sum = 0.0;
  for (var image = 0u; image < p.images; image++) {
    let base = (image * p.channels + channel) * p.pixels;
    for (var q = lid; q < p.pixels; q += THREADS) {
      sum += pre_activation_grad(base + q);
    }
  }
  partial[lid] = sum;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var i = 0u; i < THREADS; i++) {
      total += partial[i];
    }
    db[channel] = total;
  }
}

// Row (image · channels/4 + c/4) · pixels + y holds the sums of channels c … c+3 over row y of one
// image's plane (the channel count rounded up to 4; see pack_image_rows).
@group(0) @binding(4) var<storage, read> row_sums: array<vec4f>;

@compute @workgroup_size(64)
fn from_row_sums(@builtin(global_invocation_id) gid: vec3u) {
  let channel = gid.x;
  if (channel >= p.channels) {
    return;
  }
  let planes_per_image = (p.channels + 3u) / 4u;
  var sum = 0.0;
  for (var image = 0u; image < p.images; image++) {
    let first = (image * planes_per_image + channel / 4u) * p.pixels;
    for (var y = 0u; y < p.pixels; y++) {
      sum += row_sums[first + y][channel % 4u];
    }
  }
  db[channel] = sum;
}
