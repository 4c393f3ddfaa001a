// Seeded random numbers from a counter-based hash: element i depends only on (seed, i), so a
// tensor is reproducible whatever the workgroup layout. Uniform in [low, high) or normal(mean, std).

// RandomParams is declared in src/tensor/ops/random.ts.

@group(0) @binding(0) var<uniform> p: RandomParams;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

// PCG hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// A float in (0, 1] from the top 24 bits, so that log() below never sees 0.
fn unit(bits: u32) -> f32 {
  return (f32(bits >> 8u) + 1.0) / 16777216.0;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) {
    return;
  }
  let first = pcg(i + pcg(p.seed));
  if (NORMAL) {
    // Box–Muller.
    let second = pcg(first ^ 0x9e3779b9u);
    let radius = sqrt(-2.0 * log(unit(first)));
    dst[i] = p.a + p.b * radius * cos(6.283185307179586 * unit(second));
  } else {
    dst[i] = p.a + (p.b - p.a) * (unit(first) - 1.0 / 16777216.0);
  }
}
