/**
 * Settings of the MVTec AD threshold protocol (the paper's sec. 4.3) shared by training, which
 * sets a run's threshold, and evaluation, which scores it.
 *
 * @module
 */

/**
 * Default minimum defect area as a fraction of the ground-truth image area: 0.03 %, i.e. 243 px
 * at 900x900, 315 px at 1024x1024, 20 px at 256x256. It is the smallest defect area the
 * synthetic fixtures generate, so a perfect map classifies every fixture image correctly, and on
 * MVTec AD it is about a 17x17 px blob at full resolution: smaller than the small defects
 * (scratches, holes), larger than the speckles anomaly maps show on good images.
 */
export const DEFAULT_MIN_AREA_FRACTION = 0.0003;

/**
 * The default minimum defect area of a category: {@link DEFAULT_MIN_AREA_FRACTION} of its
 * ground-truth area, rounded, at least 1.
 *
 * @param width ground-truth width in pixels
 * @param height ground-truth height in pixels
 * @returns the minimum area in pixels
 */
export function defaultMinArea(width: number, height: number): number {
  return Math.max(1, Math.round(DEFAULT_MIN_AREA_FRACTION * width * height));
}
