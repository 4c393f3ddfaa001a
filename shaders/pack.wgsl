// Packs a GEMM operand into an rgba32float texture: a matrix of `rows` × `columns` (columns padded
// to a multiple of 4) stored as vec4 texels along the columns, texel t = row · columns/4 + col/4
// at (t mod TEXTURE_WIDTH, t div TEXTURE_WIDTH). The GEMM kernel then reads four operands per
// texture load, which is far cheaper than storage-buffer loads on CPU drivers such as lavapipe.
//
// MODE says how the operand is gathered (see gemm.wgsl for the four products). For
// MODE_CONV_INPUT_GRAD the product is the column matrix of the input gradient, which col2im.wgsl
// then folds into an image: computing it densely wastes nothing, where gathering zero taps of a
// strided convolution would.
//   pack_a: the M×K left operand, row = g·M + m, column = k
//   pack_b: the K×N right operand, row = g·K + k, column = n − n_offset (a chunk of the columns)
//   pack_image: a convolution's input for the implicit forward product (IMPLICIT, see gemm.wgsl)
// Values outside the product (m ≥ M, k ≥ K, n ≥ N) are written as zeros.
//
// In a backward pass through a fused activation (ACTIVATION ≠ ACT_NONE), `src` is the gradient
// of the activated output `activated`, and every value read is multiplied by the activation's
// derivative there: the gradient before the activation never exists as a tensor.

// GemmParams, MODE_* and TEXTURE_WIDTH are declared in src/tensor/ops/gemm.ts.

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;
// The fused activation's output (the host binds `src` again when there is none).
@group(0) @binding(3) var<storage, read> activated: array<f32>;

// `src` and `activated` again, four floats at a time: with VEC4_SOURCE, the four elements of each
// texel lie side by side in `src`, 16-byte aligned, and one vector load reads them (A of a weight
// gradient, B of an input gradient's column matrix: four pixels of one image).
@group(0) @binding(5) var<storage, read> src4: array<vec4f>;
@group(0) @binding(6) var<storage, read> activated4: array<vec4f>;

// src[i], times the derivative of the fused activation at element i. The derivative is read from
// the activation's output, whose sign is its input's for ReLU and a positive leaky slope.
fn read_src(i: u32) -> f32 {
  if (ACTIVATION == ACT_NONE) {
    return src[i];
  }
  let slope = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return src[i] * select(slope, 1.0, activated[i] > 0.0);
}

// src[i … i+3] (i a multiple of 4), times the derivative as in read_src.
fn read_src4(i: u32) -> vec4f {
  if (ACTIVATION == ACT_NONE) {
    return src4[i / 4u];
  }
  let slope = select(0.0, p.slope, ACTIVATION == ACT_LEAKY_RELU);
  return src4[i / 4u] * select(vec4f(slope), vec4f(1.0), activated4[i / 4u] > vec4f(0.0));
}

// The input pixel that kernel tap (ky, kx) of output pixel (oy, ox) reads, or -1 outside.
fn input_index(image: u32, channel: u32, oy: u32, ox: u32, ky: u32, kx: u32) -> i32 {
  let iy = i32(oy * p.stride_h + ky * p.dilation_h) - p.pad_h;
  let ix = i32(ox * p.stride_w + kx * p.dilation_w) - p.pad_w;
  if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
    return -1;
  }
  return i32(((image * p.cin + channel) * p.in_h + u32(iy)) * p.in_w + u32(ix));
}

// Output channel `channel` of dy at the four (image, pixel) positions first … first+3 of all
// images' pixels in a row, zero from `count` on.
fn read_output_pixels4(channel: u32, first: u32, count: u32) -> vec4f {
  let pixels = p.out_h * p.out_w;
  var image = first / pixels;
  var q = first % pixels;
  if (VEC4_SOURCE) {
    // The host sets it when images are whole texels: the four are pixels of one image.
    return read_src4((image * p.cout + channel) * pixels + q);
  }
  var values = vec4f(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (first + j < count) {
      values[j] = read_src((image * p.cout + channel) * pixels + q);
    }
    q += 1u;
    if (q == pixels) {
      q = 0u;
      image += 1u;
    }
  }
  return values;
}

// Elements k … k+3 of row m of group g of the left operand (k a multiple of 4). The four share
// one decomposition of k into channels, taps or pixels and step through memory from there; on
// lavapipe this packed the AE's operands ~1.3× faster than a lookup per element.
fn load_a4(g: u32, m: u32, k: u32) -> vec4f {
  var values = vec4f(0.0);
  if (m >= p.M) {
    return values;
  }
  if (IMPLICIT && MODE == MODE_CONV_FORWARD) {
    // The weight of an implicit convolution (groups = 1) in the order the image is read:
    // k = (tap, channel), the channels padded to whole texels of the image, so that the four
    // are channels ci … ci+3 of one tap, a fixed stride apart in the weight.
    let taps = p.kernel_h * p.kernel_w;
    let channels = p.image_c4 * 4u;
    let first = k % channels;
    let tap = k / channels;
    var index = (m * p.cin + first) * taps + tap;
    var stride = taps;
    if (PHASES) {
      // Phase g = (ry, rx) of a stride-s adjoint (see gemm.wgsl) uses the taps ky ≡ ry + pad
      // (mod s), kernel_h of them, in reverse order: the weight is [cin, cout, kh·s, kw·s].
      let ty = tap / p.kernel_w;
      let tx = tap % p.kernel_w;
      let ky = (g / p.stride_w + p.phase_pad_h) % p.stride_h + p.stride_h * (p.kernel_h - 1u - ty);
      let kx = (g % p.stride_w + p.phase_pad_w) % p.stride_w + p.stride_w * (p.kernel_w - 1u - tx);
      let full_h = p.kernel_h * p.stride_h;
      let full_w = p.kernel_w * p.stride_w;
      index = ((first * p.cout + m) * full_h + ky) * full_w + kx;
      stride = p.cout * full_h * full_w;
    } else if (FLIP_WEIGHTS) {
      // The adjoint of a stride-1 convolution with weight [cin, cout, kh, kw] (this product's
      // cout = M rows first): the same weight, kernel rotated by 180°, channels exchanged.
      index = (first * p.cout + m) * taps + taps - 1u - tap;
      stride = p.cout * taps;
    }
    for (var j = 0u; j < 4u; j++) {
      if (first + j < p.cin) {
        values[j] = read_src(index + j * stride);
      }
    }
    return values;
  }
  switch MODE {
    case MODE_CONV_WEIGHT_GRAD: {
      // Row m is output channel g·M + m of dy, and k runs over (image, pixel).
      return read_output_pixels4(g * p.M + m, k, p.K);
    }
    default: {
      for (var j = 0u; j < 4u; j++) {
        if (k + j < p.K) {
          values[j] = read_src(a_index(g, m, k + j));
        }
      }
    }
  }
  return values;
}

// Where element (m, k) of group g of a matmul's or a packed convolution's left operand lies.
fn a_index(g: u32, m: u32, k: u32) -> u32 {
  switch MODE {
    case MODE_MATMUL: {
      if (TRANS_A) {
        return g * p.a_batch_stride + k * p.M + m;
      }
      return g * p.a_batch_stride + m * p.K + k;
    }
    case MODE_CONV_FORWARD: {
      return (g * p.M + m) * p.K + k;
    }
    default: {
      // MODE_CONV_INPUT_GRAD: the transposed weight, row m = (ci, ky, kx), column k = co
      // within the group.
      return (g * p.K + k) * p.M + m;
    }
  }
}

// One element of a matmul's right operand (the convolutions go through load_b4).
fn load_b(g: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) {
    return 0.0;
  }
  if (TRANS_B) {
    return read_src(g * p.b_batch_stride + n * p.K + k);
  }
  return read_src(g * p.b_batch_stride + k * p.N + n);
}

fn texel(t: u32) -> vec2u {
  return vec2u(t % TEXTURE_WIDTH, t / TEXTURE_WIDTH);
}

@compute @workgroup_size(256)
fn pack_a(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let texels_per_row = p.K_padded / 4u;
  let rows = p.batch * p.M;
  if (t >= rows * texels_per_row) {
    return;
  }
  let row = t / texels_per_row;
  let g = row / p.M;
  let m = row % p.M;
  let k = (t % texels_per_row) * 4u;
  textureStore(dst, texel(t), load_a4(g, m, k));
}

// The four consecutive columns n .. n+3 of one row k of the right operand. Convolution columns
// are pixels (the forward and input-grad modes) or kernel taps (weight grad); decomposing the first index once and
// stepping to the next three saves the integer divisions that dominate packing on CPU drivers.
fn load_b4(g: u32, k: u32, n: u32) -> vec4f {
  if (k >= p.K) {
    return vec4f(0.0);
  }
  let taps = p.kernel_h * p.kernel_w;
  var values = vec4f(0.0);
  switch MODE {
    case MODE_CONV_FORWARD: {
      // Columns are output pixels (image, oy, ox) of one kernel tap.
      let r = k % taps;
      let ky = r / p.kernel_w;
      let kx = r % p.kernel_w;
      let channel = g * (p.cin / p.groups) + k / taps;
      let pixels = p.out_h * p.out_w;
      var image = n / pixels;
      var oy = (n % pixels) / p.out_w;
      var ox = n % p.out_w;
      for (var j = 0u; j < 4u; j++) {
        if (n + j < p.N) {
          let index = input_index(image, channel, oy, ox, ky, kx);
          if (index >= 0) {
            values[j] = read_src(u32(index));
          }
        }
        ox += 1u;
        if (ox == p.out_w) {
          ox = 0u;
          oy += 1u;
          if (oy == p.out_h) {
            oy = 0u;
            image += 1u;
          }
        }
      }
    }
    case MODE_CONV_INPUT_GRAD: {
      // Columns are pixels of the output gradient, which lies as it is.
      return read_output_pixels4(g * p.K + k, n, p.N);
    }
    case MODE_CONV_WEIGHT_GRAD: {
      // Columns are kernel taps (ci, ky, kx) of one output pixel.
      let pixels = p.out_h * p.out_w;
      let image = k / pixels;
      let q = k % pixels;
      let oy = q / p.out_w;
      let ox = q % p.out_w;
      let cin_per_group = p.cin / p.groups;
      var ci = n / taps;
      var ky = (n % taps) / p.kernel_w;
      var kx = n % p.kernel_w;
      for (var j = 0u; j < 4u; j++) {
        if (n + j < p.N) {
          let index = input_index(image, g * cin_per_group + ci, oy, ox, ky, kx);
          if (index >= 0) {
            values[j] = read_src(u32(index));
          }
        }
        kx += 1u;
        if (kx == p.kernel_w) {
          kx = 0u;
          ky += 1u;
          if (ky == p.kernel_h) {
            ky = 0u;
            ci += 1u;
          }
        }
      }
    }
    default: {
      values = vec4f(load_b(g, k, n), load_b(g, k, n + 1u), load_b(g, k, n + 2u), load_b(g, k, n + 3u));
    }
  }
  return values;
}

@compute @workgroup_size(256)
fn pack_b(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let texels_per_row = (p.n_count + 3u) / 4u;
  let rows = p.batch * p.K_padded;
  if (t >= rows * texels_per_row) {
    return;
  }
  let row = t / texels_per_row;
  let g = row / p.K_padded;
  let k = row % p.K_padded;
  let n = p.n_offset + (t % texels_per_row) * 4u;
  textureStore(dst, texel(t), load_b4(g, k, n));
}

// Channels 4·c4 … 4·c4+3 of input pixel (iy, ix) of `image` (through the activation): one texel
// of the padded image, zero outside the input and past its channels.
fn image_texel(image: u32, c4: u32, iy: i32, ix: i32) -> vec4f {
  var value = vec4f(0.0);
  if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
    return value;
  }
  let pixels = p.in_h * p.in_w;
  let first = (image * p.cin + c4 * 4u) * pixels + u32(iy) * p.in_w + u32(ix);
  for (var j = 0u; j < 4u; j++) {
    if (c4 * 4u + j < p.cin) {
      value[j] = read_src(first + j * pixels);
    }
  }
  return value;
}

// The input of an implicit convolution, zero-padded and four channels to a texel:
// texel ((image · image_c4 + c4) · image_h + y) · image_w + x holds channels 4·c4 … 4·c4+3 of
// input pixel (y − pad_h, x − pad_w), zero outside the input or past its channels. The image is
// as large as the windows reach, so gemm.wgsl reads it without bounds checks; it is about the
// size of the input, where the packed column matrix is kernel_h·kernel_w/stride² times larger.
// The grid's z is (image, c4), the same for a whole workgroup, and x and y run over the plane:
// a thread divides only to split its texel of the plane into (y, x).
@compute @workgroup_size(256)
fn pack_image(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let q = gid.x + gid.y * nwg.x * 256u;
  let plane = p.image_h * p.image_w;
  if (q >= plane) {
    return;
  }
  let x = q % p.image_w;
  let y = q / p.image_w;
  let c4 = wid.z % p.image_c4;
  let image = wid.z / p.image_c4;
  let value = image_texel(image, c4, i32(y) - p.pad_h, i32(x) - p.pad_w);
  textureStore(dst, texel(wid.z * plane + q), value);
}

// pack_image for rows of a multiple of 4 pixels, reading four pixels of each channel with one
// vector load (src4; on lavapipe a load costs about the same for a float or a vector). A row of the
// padded image is covered in blocks of four input pixels, ix = 4·b − 4·⌈pad_w / 4⌉ … + 3 for
// block b (texels x = ix + pad_w, those that lie in the image): a block lies wholly inside the
// input row or wholly outside it, since the row and the block both start on a multiple of 4.

// Blocks of a row over its left padding (none where the padding is negative).
fn left_blocks() -> i32 {
  return max(0, (p.pad_w + 3) / 4);
}

// Blocks per row: those over the left padding, then those from input pixel 0 on.
fn blocks_per_row() -> u32 {
  return u32(i32(p.image_w) + 4 * left_blocks() - p.pad_w + 3) / 4u;
}

// Stores block b of row `row` ((image · image_c4 + c4) · image_h + y) of the padded image and
// returns the sum of its texels.
fn pack_block(row: u32, b: u32) -> vec4f {
  let plane = row / p.image_h;
  let y = row - plane * p.image_h;
  let ix = (i32(b) - left_blocks()) * 4;
  let iy = i32(y) - p.pad_h;
  let c4 = plane % p.image_c4;
  let image = plane / p.image_c4;
  var v0 = vec4f(0.0);
  var v1 = vec4f(0.0);
  var v2 = vec4f(0.0);
  var v3 = vec4f(0.0);
  if (iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
    let pixels = p.in_h * p.in_w;
    let first = (image * p.cin + c4 * 4u) * pixels + u32(iy) * p.in_w + u32(ix);
    let c = c4 * 4u;
    v0 = read_src4(first);
    if (c + 1u < p.cin) {
      v1 = read_src4(first + pixels);
    }
    if (c + 2u < p.cin) {
      v2 = read_src4(first + 2u * pixels);
    }
    if (c + 3u < p.cin) {
      v3 = read_src4(first + 3u * pixels);
    }
  }
  let row_texel = row * p.image_w;
  let x = ix + p.pad_w;
  for (var j = 0; j < 4; j++) {
    if (x + j >= 0 && x + j < i32(p.image_w)) {
      textureStore(dst, texel(row_texel + u32(x + j)), vec4f(v0[j], v1[j], v2[j], v3[j]));
    }
  }
  // Channels across the four pixels: the block's sum per channel (zeros outside the input).
  return vec4f(
    dot(v0, vec4f(1.0)),
    dot(v1, vec4f(1.0)),
    dot(v2, vec4f(1.0)),
    dot(v3, vec4f(1.0)),
  );
}

// One thread per block of all rows of all texel planes (small images have too few texels a plane
// to fill a workgroup).
@compute @workgroup_size(256)
fn pack_image4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let q = gid.x + gid.y * nwg.x * 256u;
  let per_row = blocks_per_row();
  let row = q / per_row;
  if (row >= p.images * p.image_c4 * p.image_h) {
    return;
  }
  pack_block(row, q - row * per_row);
}

// The sum of each row of an image packed by pack_image_rows, four channels at a time: row
// (image · image_c4 + c4) · image_h + y. The padding is zero, so the rows of all images add up to
// the sum of the input over images and pixels per channel, which is the bias gradient of the
// layer when the input is its output's gradient (bias_grad.wgsl's from_row_sums adds them).
@group(0) @binding(4) var<storage, read_write> row_sums: array<vec4f>;

// pack_image, one thread per row of a texel plane, storing the row's sum as well: the input
// gradient of a layer with a bias packs its output's gradient as an image anyway, and summing it
// there replaces a separate reduction over the gradient.
@compute @workgroup_size(64)
fn pack_image_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.images * p.image_c4 * p.image_h) {
    return;
  }
  let y = row % p.image_h;
  let plane = row / p.image_h;
  let c4 = plane % p.image_c4;
  let image = plane / p.image_c4;
  let first_texel = row * p.image_w;
  let iy = i32(y) - p.pad_h;
  var sum = vec4f(0.0);
  for (var x = 0u; x < p.image_w; x++) {
    let value = image_texel(image, c4, iy, i32(x) - p.pad_w);
    textureStore(dst, texel(first_texel + x), value);
    sum += value;
  }
  row_sums[row] = sum;
}

// pack_image_rows for rows of a multiple of 4 pixels, a block of four pixels at a time as
// pack_image4 reads them. (A thread per block, each storing its block's sum, packed no faster on
// lavapipe, and left 25 times more sums to add.)
@compute @workgroup_size(64)
fn pack_image_rows4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * 64u;
  if (row >= p.images * p.image_c4 * p.image_h) {
    return;
  }
  var sum = vec4f(0.0);
  let blocks = blocks_per_row();
  for (var b = 0u; b < blocks; b++) {
    sum += pack_block(row, b);
  }
  row_sums[row] = sum;
}
