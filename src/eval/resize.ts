/**
 * Bilinear resizing of anomaly maps to the ground-truth resolution.
 *
 * @module
 */

/**
 * Bilinearly resizes a row-major single-channel map, with `align_corners=false`
 * semantics (PyTorch `F.interpolate(mode="bilinear", align_corners=False)`
 * without antialiasing, OpenCV `INTER_LINEAR`): output pixel centre `x` samples
 * the source at `(x + 0.5) * srcWidth / dstWidth - 0.5`, clamped to the
 * source's edge pixels. Same-size input is returned as a copy.
 *
 * @param source row-major source map of `srcWidth * srcHeight` values
 * @param srcWidth source width
 * @param srcHeight source height
 * @param dstWidth output width
 * @param dstHeight output height
 * @returns a new row-major map of `dstWidth * dstHeight` values
 */
export function resizeBilinear(
  source: Float32Array,
  srcWidth: number,
  srcHeight: number,
  dstWidth: number,
  dstHeight: number,
): Float32Array {
  for (const size of [srcWidth, srcHeight, dstWidth, dstHeight]) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`invalid map size ${size}`);
  }
  if (source.length !== srcWidth * srcHeight) {
    throw new RangeError(
      `map has ${source.length} values, expected ${srcWidth}x${srcHeight} = ${
        srcWidth * srcHeight
      }`,
    );
  }
  if (srcWidth === dstWidth && srcHeight === dstHeight) return source.slice();

  const { lower: x0, upper: x1, weight: wx } = samplePositions(srcWidth, dstWidth);
  const { lower: y0, upper: y1, weight: wy } = samplePositions(srcHeight, dstHeight);
  const output = new Float32Array(dstWidth * dstHeight);
  for (let y = 0; y < dstHeight; y++) {
    const rowTop = y0[y] * srcWidth;
    const rowBottom = y1[y] * srcWidth;
    const fy = wy[y];
    for (let x = 0; x < dstWidth; x++) {
      const fx = wx[x];
      const top = source[rowTop + x0[x]] * (1 - fx) + source[rowTop + x1[x]] * fx;
      const bottom = source[rowBottom + x0[x]] * (1 - fx) + source[rowBottom + x1[x]] * fx;
      output[y * dstWidth + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return output;
}

/** For each output coordinate: the two source neighbours and the weight of the upper one. */
function samplePositions(
  sourceSize: number,
  targetSize: number,
): { lower: Int32Array; upper: Int32Array; weight: Float64Array } {
  const lower = new Int32Array(targetSize);
  const upper = new Int32Array(targetSize);
  const weight = new Float64Array(targetSize);
  const scale = sourceSize / targetSize;
  for (let i = 0; i < targetSize; i++) {
    const position = Math.min(Math.max((i + 0.5) * scale - 0.5, 0), sourceSize - 1);
    lower[i] = Math.floor(position);
    upper[i] = Math.min(lower[i] + 1, sourceSize - 1);
    weight[i] = position - lower[i];
  }
  return { lower, upper, weight };
}
