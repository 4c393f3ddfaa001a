// Gaussian mixture models on neighbourhood features (GMM texture inspection). The heavy products
// run on the GEMM engine; these kernels do the per-sample work around them. Samples are stored
// feature-major, [DIM, N], as a convolution produces them.
//
// pad_replicate: pads a plane by PAD pixels on every side, replicating the border, so that a
//   valid convolution gives every pixel's full neighbourhood.
// loglik: from Z = W · X ([K·DIM, N], W_k = L_k⁻¹ with Σ_k = L_k L_kᵀ) and b_k = W_k μ_k, the
//   log-density log π_k + c_k − ½|Z_k x − b_k|² of every sample under every component, combined
//   with an online log-sum-exp. Writes log p(x) and, with WRITE_RESP, the responsibilities
//   [K, N]. Non-finite values are replaced so that nothing non-finite leaves the kernel.
// weighted: G[k, i, n] = √r_kn (x_in − s_ki) for i < DIM and √r_kn for i = DIM, and its
//   transpose, so that G_k G_kᵀ holds the M-step's shifted sums: Σ r (x − s)(x − s)ᵀ, Σ r (x − s)
//   in the last row and Σ r in the corner.
//
// PadParams and SampleCountParams are declared in src/methods/gmm/mixture.ts.

@group(0) @binding(0) var<uniform> pad_p: PadParams;
@group(0) @binding(1) var<storage, read> pad_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> pad_dst: array<f32>;

@compute @workgroup_size(256)
fn pad_replicate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= pad_p.out_width * pad_p.out_height) {
    return;
  }
  let x = clamp(i32(i % pad_p.out_width) - i32(PAD), 0, i32(pad_p.width) - 1);
  let y = clamp(i32(i / pad_p.out_width) - i32(PAD), 0, i32(pad_p.height) - 1);
  pad_dst[i] = pad_src[u32(y) * pad_p.width + u32(x)];
}

@group(0) @binding(0) var<uniform> mp: SampleCountParams;
@group(0) @binding(1) var<storage, read> whitened: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<f32>;
@group(0) @binding(3) var<storage, read> log_const: array<f32>;
@group(0) @binding(4) var<storage, read_write> log_likelihood: array<f32>;
@group(0) @binding(5) var<storage, read_write> responsibility: array<f32>;

const HUGE: f32 = 1e30;

// `value` if it is finite, else `fallback`. Tested on the bits (all exponent bits set means NaN
// or ±Inf) rather than with comparisons, which a compiler that assumes finite floats (Metal's
// fast math, for one) may fold away.
fn finite_or(value: f32, fallback: f32) -> f32 {
  if ((bitcast<u32>(value) & 0x7f800000u) != 0x7f800000u) {
    return value;
  }
  return fallback;
}

fn component_log_density(k: u32, n: u32) -> f32 {
  var squared = 0.0;
  for (var i = 0u; i < DIM; i++) {
    let z = whitened[(k * DIM + i) * mp.samples + n] - offsets[k * DIM + i];
    squared += z * z;
  }
  // A sample absurdly far from a component gets a finite, tiny density there.
  return clamp(finite_or(log_const[k] - 0.5 * squared, -HUGE), -HUGE, HUGE);
}

@compute @workgroup_size(256)
fn loglik(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = gid.x + gid.y * nwg.x * 256u;
  if (n >= mp.samples) {
    return;
  }
  var best = -HUGE;
  var total = 0.0;
  for (var k = 0u; k < K; k++) {
    let value = component_log_density(k, n);
    if (value > best) {
      total = total * exp(best - value) + 1.0;
      best = value;
    } else {
      total += exp(value - best);
    }
  }
  let lse = clamp(finite_or(best + log(total), -HUGE), -HUGE, HUGE);
  log_likelihood[n] = lse;
  if (WRITE_RESP) {
    for (var k = 0u; k < K; k++) {
      responsibility[k * mp.samples + n] = finite_or(exp(component_log_density(k, n) - lse), 0.0);
    }
  }
}

@group(0) @binding(0) var<uniform> wp: SampleCountParams;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read> resp: array<f32>;
@group(0) @binding(3) var<storage, read> shifts: array<f32>;
@group(0) @binding(4) var<storage, read_write> weighted_rows: array<f32>;
@group(0) @binding(5) var<storage, read_write> weighted_columns: array<f32>;

@compute @workgroup_size(256)
fn weighted(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let index = gid.x + gid.y * nwg.x * 256u;
  let rows = DIM + 1u;
  if (index >= K * rows * wp.samples) {
    return;
  }
  let n = index % wp.samples;
  let i = (index / wp.samples) % rows;
  let k = index / (wp.samples * rows);
  let root = sqrt(max(resp[k * wp.samples + n], 0.0));
  var value = root;
  if (i < DIM) {
    value = root * (features[i * wp.samples + n] - shifts[k * DIM + i]);
  }
  weighted_rows[index] = value;
  weighted_columns[(k * wp.samples + n) * rows + i] = value;
}
