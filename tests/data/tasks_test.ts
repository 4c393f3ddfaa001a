import assert from "node:assert/strict";
import { defaultFixturesDir } from "../../fixtures/mod.ts";
import { parseFixtureArgs } from "../../tasks/fixtures.ts";

Deno.test("fixtures task: flags, defaults and clear errors", () => {
  assert.deepEqual(parseFixtureArgs([]), { out: defaultFixturesDir(), seed: 0 });
  assert.deepEqual(parseFixtureArgs(["--out", "/tmp/x", "--seed", "5"]), {
    out: "/tmp/x",
    seed: 5,
  });
  assert.equal(parseFixtureArgs(["--help"]), "help");
  assert.throws(() => parseFixtureArgs(["--size", "3"]), /Unknown flag "--size"/);
  assert.throws(() => parseFixtureArgs(["--seed=-1"]), /--seed must be a non-negative integer/);
  assert.throws(() => parseFixtureArgs(["extra"]), /--help/);
});
