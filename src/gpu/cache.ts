/**
 * Values that ops derive once and keep on the GPU, such as the border weights of a filter for one
 * image size. They belong to the {@link Gpu}: destroying it frees them, and they never outlive it
 * pointing at a dead device.
 */

/** Something the cache can free: a tensor, for example. */
export interface CachedResource {
  /** Frees the GPU memory. */
  dispose(): void;
  /** Whether it was freed (by the cache or by its user). */
  readonly isDisposed: boolean;
}

/** Kept resources by key, oldest freed first once there are more than `limit`. */
export class ResourceCache {
  private readonly entries = new Map<string, CachedResource>();

  /** A cache that holds at most `limit` resources. */
  constructor(private readonly limit = 64) {}

  /** Number of resources held. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The resource under `key`, made by `make` on first use (or after it was disposed). The caller
   * must not dispose it; it stays valid until the cache evicts it or is cleared, so use it right
   * away rather than holding it across other cache lookups.
   */
  get<T extends CachedResource>(key: string, make: () => T): T {
    const cached = this.entries.get(key);
    if (cached && !cached.isDisposed) return cached as T;
    this.entries.delete(key);
    if (this.entries.size >= this.limit) {
      const [oldestKey, oldest] = this.entries.entries().next().value!;
      this.entries.delete(oldestKey);
      oldest.dispose();
    }
    const made = make();
    this.entries.set(key, made);
    return made;
  }

  /** Frees every resource held. */
  clear(): void {
    for (const resource of this.entries.values()) resource.dispose();
    this.entries.clear();
  }
}
