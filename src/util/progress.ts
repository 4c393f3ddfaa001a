/**
 * A terminal progress bar for long command-line jobs (evaluation, training):
 *
 * ```text
 * bottle  [#########.................]  35/83  42%  12.3 maps/s  ETA 4s  loss=0.0123
 * ```
 *
 * On a terminal the line is redrawn in place with `\r` (at most every 100 ms). When the output
 * is not a terminal (CI logs, a file), redrawing would leave hundreds of lines, so the bar prints
 * a plain line now and then (every 10 s by default) and one at the end instead. It writes to
 * stderr by default, so that `deno task eval > table.txt` keeps the results clean while the bar
 * stays visible. `enabled: false` makes every method a no-op, which lets library code take an
 * optional bar without `if`s.
 *
 * ```ts
 * const bar = new ProgressBar({ label: "bottle", total: 83, unit: "maps" });
 * for (let i = 1; i <= 83; i++) bar.update(i);
 * bar.done();
 * ```
 *
 * @module
 */

/** Where the bar writes: `Deno.stderr`, `Deno.stdout`, or a test double. */
export interface ProgressStream {
  /** Writes bytes synchronously, returning how many were written. */
  writeSync(bytes: Uint8Array): number;
  /** True when the stream is an interactive terminal. */
  isTerminal(): boolean;
}

/** Extra values shown after the ETA, e.g. `{ loss: 0.0123 }`; numbers get 4 significant digits. */
export type ProgressFields = Record<string, string | number>;

/** Options of {@link ProgressBar}. */
export interface ProgressBarOptions {
  /** Text before the bar, e.g. a category name. */
  label: string;
  /** Number of steps that make 100%; 0 or less shows no bar, percentage or ETA. */
  total: number;
  /** Unit of the rate, e.g. `"maps"` gives `12.3 maps/s`. Default `"it"`. */
  unit?: string;
  /** False turns every method into a no-op. Default true. */
  enabled?: boolean;
  /** Output. Default `Deno.stderr`. */
  stream?: ProgressStream;
  /** Redraw in place (true) or print plain lines (false). Default: `stream.isTerminal()`. */
  interactive?: boolean;
  /** Width of the bar in characters. Default 24. */
  barWidth?: number;
  /** Without a terminal: least milliseconds between two plain lines. Default 10000. */
  lineIntervalMs?: number;
  /** On a terminal: least milliseconds between two redraws. Default 100. */
  redrawIntervalMs?: number;
  /** Clock in milliseconds, for tests. Default `performance.now`. */
  now?: () => number;
}

const encoder = new TextEncoder();
/** ANSI "erase to end of line": removes leftovers of a longer previous line. */
const CLEAR_TO_END = "\x1b[K";

/**
 * Formats a duration compactly: `45s`, `3m05s`, `2h07m`.
 *
 * @param seconds non-negative duration; non-finite values give `"?"`
 * @returns the formatted duration
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole}s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes}m${String(whole % 60).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

function formatField(value: string | number): string {
  if (typeof value === "string") return value;
  if (Number.isInteger(value)) return String(value);
  return Number.isFinite(value) ? value.toPrecision(4) : String(value);
}

/** A progress bar on one line; see the module documentation. */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number;
  readonly #unit: string;
  readonly #enabled: boolean;
  readonly #stream: ProgressStream;
  readonly #interactive: boolean;
  readonly #barWidth: number;
  readonly #lineIntervalMs: number;
  readonly #redrawIntervalMs: number;
  readonly #now: () => number;
  readonly #startedAt: number;
  #current = 0;
  /** The first update's count and time: the rate counts only work seen by the bar. */
  #first: { count: number; at: number } | null = null;
  #fields: ProgressFields = {};
  #lastOutputAt = -Infinity;
  #finished = false;
  /** Whether a partial line is on screen (interactive mode), which other output must clear. */
  #lineShown = false;

  /**
   * Creates the bar; nothing is drawn before the first {@link update}.
   *
   * @param options label, total and output settings
   */
  constructor(options: ProgressBarOptions) {
    this.#label = options.label;
    this.#total = options.total;
    this.#unit = options.unit ?? "it";
    this.#enabled = options.enabled ?? true;
    this.#stream = options.stream ?? Deno.stderr;
    this.#interactive = options.interactive ?? (this.#enabled && this.#stream.isTerminal());
    this.#barWidth = options.barWidth ?? 24;
    this.#lineIntervalMs = options.lineIntervalMs ?? 10_000;
    this.#redrawIntervalMs = options.redrawIntervalMs ?? 100;
    this.#now = options.now ?? (() => performance.now());
    this.#startedAt = this.#now();
  }

  /**
   * Sets the progress and shows it, unless output was shown very recently (see the intervals).
   *
   * @param current steps done so far, 0..total
   * @param fields extra values to show from now on (merged into the previous ones)
   */
  update(current: number, fields?: ProgressFields): void {
    if (!this.#enabled || this.#finished) return;
    this.#current = current;
    if (fields) this.#fields = { ...this.#fields, ...fields };
    const now = this.#now();
    this.#first ??= { count: current, at: now };
    const interval = this.#interactive ? this.#redrawIntervalMs : this.#lineIntervalMs;
    // The first update always shows, so that a log says early what is running.
    if (now - this.#lastOutputAt < interval) return;
    this.#show(now);
  }

  /**
   * Advances by `steps` (default 1); see {@link update}.
   *
   * @param steps steps just completed
   * @param fields extra values to show
   */
  tick(steps: number = 1, fields?: ProgressFields): void {
    this.update(this.#current + steps, fields);
  }

  /**
   * Prints a line of other output without garbling the bar: the bar's line is cleared, the text
   * printed, and the bar redrawn below it.
   *
   * @param line text to print (a newline is added)
   */
  log(line: string): void {
    if (!this.#enabled) return;
    if (this.#interactive && this.#lineShown) {
      this.#write(`\r${CLEAR_TO_END}${line}\n`);
      this.#lineShown = false;
      if (!this.#finished) this.#show(this.#now());
    } else {
      this.#write(`${line}\n`);
    }
  }

  /**
   * Shows the final state and ends the line; later calls to update are ignored.
   *
   * @param fields extra values for the final line
   */
  done(fields?: ProgressFields): void {
    if (!this.#enabled || this.#finished) return;
    if (fields) this.#fields = { ...this.#fields, ...fields };
    this.#finished = true;
    this.#show(this.#now());
    if (this.#interactive) this.#write("\n");
    this.#lineShown = false;
  }

  /**
   * The text of the bar line as it would be drawn now (without control characters).
   *
   * @returns the bar line
   */
  render(): string {
    return this.#render(this.#now());
  }

  #render(now: number): string {
    const seconds = Math.max(0, (now - this.#startedAt) / 1000);
    const parts = [this.#label];
    const hasTotal = this.#total > 0;
    if (hasTotal) {
      const fraction = Math.min(1, Math.max(0, this.#current / this.#total));
      const filled = Math.round(fraction * this.#barWidth);
      parts.push(`[${"#".repeat(filled)}${".".repeat(this.#barWidth - filled)}]`);
      parts.push(`${this.#current}/${this.#total}`, `${Math.floor(fraction * 100)}%`);
    } else {
      parts.push(String(this.#current));
    }
    // Measured from the first update, not from construction: a bar made after some work was done
    // (a resumed run, a bar created at the first report) would otherwise claim a wild rate.
    const first = this.#first;
    const rate = first && now > first.at
      ? (this.#current - first.count) / ((now - first.at) / 1000)
      : 0;
    if (rate > 0) parts.push(`${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${this.#unit}/s`);
    if (this.#finished) {
      parts.push(`in ${formatDuration(seconds)}`);
    } else if (hasTotal && rate > 0) {
      parts.push(`ETA ${formatDuration(Math.max(0, this.#total - this.#current) / rate)}`);
    }
    for (const [key, value] of Object.entries(this.#fields)) {
      parts.push(`${key}=${formatField(value)}`);
    }
    return parts.join("  ");
  }

  #show(now: number): void {
    this.#lastOutputAt = now;
    const text = this.#render(now);
    if (this.#interactive) {
      this.#write(`\r${this.#fitToTerminal(text)}${CLEAR_TO_END}`);
      this.#lineShown = true;
    } else {
      this.#write(`${text}\n`);
    }
  }

  /** A line wider than the terminal wraps, and `\r` then redraws only its last part. */
  #fitToTerminal(text: string): string {
    let columns = Infinity;
    try {
      columns = Deno.consoleSize().columns;
    } catch {
      // Not a console (e.g. a test double claiming to be a terminal): no limit.
    }
    return text.length < columns ? text : text.slice(0, Math.max(0, columns - 1));
  }

  #write(text: string): void {
    try {
      this.#stream.writeSync(encoder.encode(text));
    } catch {
      // Progress is decoration: a closed pipe must not fail the job.
    }
  }
}
