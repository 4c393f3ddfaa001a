/**
 * What the fuzzing runner and its worker process say to each other: the runner writes case
 * numbers on the worker's stdin, one per line; the worker answers with JSON messages on stdout,
 * each on a line of its own after {@link PROTOCOL_PREFIX} (other output of a parser is ignored).
 *
 * @module
 */

/** How a case ended. */
export type CaseOutcome = "accepted" | "rejected" | "crash" | "hang";

/** Marks the worker's message lines among whatever else a parser prints. */
export const PROTOCOL_PREFIX = "\u0001anodet-fuzz ";

/** Messages from the worker. */
export type FromWorker =
  /** The seed is built; case numbers may come. */
  | { type: "ready" }
  /** The harness itself failed (no such target, the seed or a case's files could not be made). */
  | { type: "failed"; message: string }
  /** The case is made and written; its reads start now. */
  | { type: "started"; index: number; description: string }
  /** How the case's reads ended and how long they took. */
  | { type: "done"; index: number; outcome: CaseOutcome; milliseconds: number; detail?: string }
  /** A promise a parser left behind rejected. */
  | { type: "stray"; detail: string };
