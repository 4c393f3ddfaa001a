/**
 * Fault injection for the crash-safety tests (tests/reliability): a named point where a process
 * can be told to stop and wait to be killed. Inert unless `ANODET_TEST_HOLD` is set; it depends on
 * nothing, so that the lowest-level modules (src/util/fs.ts) can use it.
 *
 * @module
 */

/** The environment variable naming the point at which {@link holdAtTestPoint} holds. */
export const TEST_HOLD_VARIABLE = "ANODET_TEST_HOLD";

/** How often each point was passed, for `point:N`. */
const testPointPassages = new Map<string, number>();

/** The point `ANODET_TEST_HOLD` names, read once; undefined when it is unset. */
let requestedHold: { value: string | undefined } | null = null;

function requestedTestHold(): string | undefined {
  if (requestedHold === null) {
    // Without permission to read it, no test asked for a hold; asking would prompt the user.
    const permission = Deno.permissions.querySync({ name: "env", variable: TEST_HOLD_VARIABLE });
    requestedHold = {
      value: permission.state === "granted" ? Deno.env.get(TEST_HOLD_VARIABLE) : undefined,
    };
  }
  return requestedHold.value;
}

/**
 * Fault injection for the crash-safety tests (tests/reliability), inert unless the environment
 * variable `ANODET_TEST_HOLD` names this point: `<point>` holds at its first passage, `<point>:N`
 * at its N-th. Holding prints `ANODET_TEST_HOLD <point>:<N>` to stderr and waits forever, so that
 * the test can kill the process with SIGKILL at exactly that moment, not at a guessed time.
 *
 * The points: `fit-step` (a training step recorded, src/nn/fit.ts), `fit-checkpoint` (an epoch
 * done, before its checkpoint is written), `map` (an anomaly map written, src/methods/runner.ts),
 * `atomic-write/<file name>` (the temporary copy of that file written, before its rename,
 * src/util/fs.ts writeFileAtomic).
 *
 * @param point the point's name
 */
export async function holdAtTestPoint(point: string): Promise<void> {
  const requested = requestedTestHold();
  if (requested === undefined) return;
  const [name, count = "1"] = requested.split(":");
  if (name !== point) return;
  const passage = (testPointPassages.get(point) ?? 0) + 1;
  testPointPassages.set(point, passage);
  if (String(passage) !== count) return;
  console.error(`${TEST_HOLD_VARIABLE} ${point}:${passage}`);
  // A pending timer keeps the process alive; a bare pending promise would let Deno exit.
  await new Promise(() => setInterval(() => {}, 60_000));
}
