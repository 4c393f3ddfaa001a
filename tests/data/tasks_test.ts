import assert from "node:assert/strict";
import { defaultFixturesDir } from "../../fixtures/mod.ts";
import { parseFixtureArgs } from "../../tasks/fixtures.ts";

Deno.test("fixtures task: flags, defaults and clear errors", () => {
  const plain = { realWorld: false, scale: 0.128 };
  assert.deepEqual(parseFixtureArgs([]), { out: defaultFixturesDir(), seed: 0, ...plain });
  assert.deepEqual(parseFixtureArgs(["--out", "/tmp/x", "--seed", "5"]), {
    out: "/tmp/x",
    seed: 5,
    ...plain,
  });
  const realWorld = parseFixtureArgs(["--real-world", "--scale", "1"]);
  assert.ok(realWorld !== "help");
  assert.deepEqual([realWorld.realWorld, realWorld.scale], [true, 1]);
  assert.match(realWorld.out, /\.fixtures-cache\/real_world$/);
  assert.throws(() => parseFixtureArgs(["--scale", "1"]), /--scale sets the sizes of --real-world/);
  assert.throws(
    () => parseFixtureArgs(["--real-world", "--scale", "0"]),
    /--scale expects a number in \(0, 4\], got "0"/,
  );
  assert.equal(parseFixtureArgs(["--help"]), "help");
  assert.throws(() => parseFixtureArgs(["--size", "3"]), /Unknown flag "--size"/);
  assert.throws(() => parseFixtureArgs(["--seed=-1"]), /--seed must be a non-negative integer/);
  assert.throws(() => parseFixtureArgs(["extra"]), /--help/);
});
