/**
 * A lost GPU device (driver reset, GPU removed, `device.destroy()`) resolves `GPUDevice.lost`, and
 * then some of its promises never settle: a `mapAsync` or `onSubmittedWorkDone` can wait forever.
 * {@link DeviceLossWatch} races every such wait against the loss, so that a command stops with
 * {@link GpuDeviceLostError} instead of hanging.
 *
 * @module
 */

/**
 * How a device was lost: `GPUDevice.lost`'s value. The reason is a string here, since WebGPU
 * defines more of them ("unknown", "destroyed") than some runtimes' types list.
 */
export interface DeviceLoss {
  /** Why, in one word. */
  readonly reason: string;
  /** What the driver or runtime said. */
  readonly message: string;
}

/** Thrown by every GPU operation once the device is lost; the message says why. */
export class GpuDeviceLostError extends Error {
  /**
   * The error for a device lost with `info` (the `GPUDevice.lost` value), followed by `advice`
   * (what the user can do, e.g. resume the training) when given.
   */
  constructor(readonly info: DeviceLoss, advice?: string) {
    const detail = info.message.trim();
    super(
      `the GPU device was lost: ${info.reason}${detail ? ` (${detail})` : ""}` +
        (advice ? `. ${advice}` : ""),
    );
    this.name = "GpuDeviceLostError";
  }
}

/** How long a failed wait gives `device.lost` to settle before its own error is taken. */
const LOSS_GRACE_MS = 200;

/** Watches one device for its loss. */
export class DeviceLossWatch {
  /** How the device was lost, once it is. */
  private lostInfo: DeviceLoss | null = null;
  /** Rejects with the loss's error; never resolves. */
  private readonly lost: Promise<never>;

  /** Starts watching `device`. */
  constructor(device: GPUDevice) {
    this.lost = device.lost.then((info) => {
      this.lostInfo = info;
      throw new GpuDeviceLostError(info);
    });
    // Only the races below observe the rejection; without this it would be an unhandled one.
    this.lost.catch(() => {});
  }

  /** The loss's error, or null while the device works. */
  get error(): GpuDeviceLostError | null {
    return this.lostInfo && new GpuDeviceLostError(this.lostInfo);
  }

  /**
   * Throws the loss's error if the device is lost: new work on it would fail or never end. The
   * error is made here, so that its stack trace (`--debug`) shows the work that found the loss.
   */
  throwIfLost(): void {
    if (this.lostInfo) throw new GpuDeviceLostError(this.lostInfo);
  }

  /**
   * `wait`, unless the device is lost first (then {@link GpuDeviceLostError}). A wait that fails
   * because of the loss (a `mapAsync` rejected with a bare "validation error") also throws the
   * loss's error, which says what happened.
   */
  async race<T>(wait: Promise<T>): Promise<T> {
    this.throwIfLost();
    try {
      return await Promise.race([wait, this.lost]);
    } catch (error) {
      // The loss can fail the wait before `device.lost` settles: give it a moment to.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.lost,
        new Promise((resolve) => (timer = setTimeout(resolve, LOSS_GRACE_MS))),
      ]).catch(() => {});
      clearTimeout(timer);
      this.throwIfLost();
      throw error;
    }
  }
}
