/**
 * The project's own error for bad input: a file, folder, flag or value that the user (or another
 * tool) gave and that cannot be used. Its message names the file or flag and what was expected,
 * in one line, so that a task prints it as it is (no stack trace unless `--debug`).
 *
 * Every parser throws an InputError (or a subclass) for anything wrong with its bytes; any other
 * exception escaping a parser is a bug. The fuzzing harness (`deno task fuzz`) counts it so.
 */
export class InputError extends Error {
  /** An error saying `message`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InputError";
  }
}

/** Whether `error` is the project's own input error (or one of its subclasses). */
export function isInputError(error: unknown): error is InputError {
  return error instanceof InputError;
}
