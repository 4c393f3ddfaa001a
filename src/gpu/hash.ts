/**
 * Cache keys made of numbers, for the per-dispatch caches (uniform blocks, bind groups): a hash to
 * look an entry up by without building a key string, and the comparison that confirms a hit, so a
 * collision only costs a miss.
 */

/** FNV-1a over the numbers (values above 2³² fold their high word in). */
export function hashNumbers(values: ArrayLike<number>): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    hash = Math.imul(hash ^ (value | 0), 0x01000193);
    if (value > 0xffffffff) hash = Math.imul(hash ^ Math.floor(value / 0x100000000), 0x01000193);
  }
  return hash >>> 0;
}

/** Whether two keys hold the same numbers. */
export function sameNumbers(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
