/**
 * Small seeded pseudo-random number generation.
 *
 * Everything that is random in the data pipeline (validation splits, augmentation, the synthetic
 * fixtures) goes through {@link Random} so that the same seed always reproduces the same data on
 * every platform. `Math.random` is never used.
 *
 * @module
 */

/**
 * One step of splitmix32: a strong 32-bit mixing function. Used to turn arbitrary (often small and
 * similar) seeds into well-spread generator states, because mulberry32 started from seeds 0, 1, 2…
 * produces correlated first outputs.
 *
 * @param value any 32-bit integer
 * @returns the mixed unsigned 32-bit integer
 */
export function mix32(value: number): number {
  let z = (value + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Derives one 32-bit seed from several parts (numbers or strings). Lets independent consumers
 * (e.g. "image 17 of category carpet") get their own stream from a single user seed, so that the
 * result does not depend on the order in which the work is done.
 *
 * @param parts seed components; order matters
 * @returns an unsigned 32-bit seed
 */
export function hashSeed(...parts: ReadonlyArray<number | string>): number {
  let state = 0x811c9dc5;
  for (const part of parts) {
    if (typeof part === "number") {
      // Split doubles into two 32-bit halves so large and fractional seeds both count fully.
      state = mix32(state ^ (part >>> 0));
      state = mix32(state ^ Math.floor(part / 0x100000000));
    } else {
      for (let i = 0; i < part.length; i++) state = mix32(state ^ part.charCodeAt(i));
      state = mix32(state ^ part.length);
    }
  }
  return state;
}

/** A seeded pseudo-random generator (mulberry32) with convenience helpers. */
export class Random {
  #state: number;

  /**
   * Creates a generator.
   *
   * @param seed any number; equal seeds give equal streams
   */
  constructor(seed: number) {
    this.#state = hashSeed(seed);
  }

  /**
   * Draws 32 random bits.
   *
   * @returns the next unsigned 32-bit integer
   */
  nextUint32(): number {
    // mulberry32: tiny, fast and good enough statistically for data augmentation.
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /**
   * Draws a float in [0, 1).
   *
   * @returns a float uniformly distributed in [0, 1)
   */
  next(): number {
    return this.nextUint32() / 0x100000000;
  }

  /**
   * Draws a float in [min, max).
   *
   * @param min inclusive lower bound
   * @param max exclusive upper bound
   * @returns a float uniformly distributed in [min, max)
   */
  uniform(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /**
   * Draws an integer in [min, maxExclusive).
   *
   * @param min inclusive lower bound
   * @param maxExclusive exclusive upper bound
   * @returns an integer uniformly distributed in [min, maxExclusive)
   */
  int(min: number, maxExclusive: number): number {
    return min + Math.floor(this.next() * (maxExclusive - min));
  }

  /**
   * Draws a boolean.
   *
   * @param probability chance of returning true
   * @returns true with the given probability
   */
  chance(probability: number): boolean {
    return this.next() < probability;
  }

  /**
   * Standard normal sample (Box–Muller).
   *
   * @returns a normally distributed float with mean 0 and standard deviation 1
   */
  normal(): number {
    const u = 1 - this.next(); // in (0, 1], keeps log finite
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /**
   * Picks a random element.
   *
   * @param items non-empty list
   * @returns one element chosen uniformly
   */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Random.pick: cannot pick from an empty list");
    return items[this.int(0, items.length)];
  }

  /**
   * Fisher–Yates shuffle in place.
   *
   * @param items array to shuffle
   * @returns the same array, shuffled
   */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }
}
