/**
 * A program outside the repository imports mod.ts and runs a kernel with no permission flags at
 * all: importing the package and `init()` must not read files, fetch, or load native code (the
 * shaders are bundled into the code; image codecs load on first use).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("mod.ts imported by file URL runs a kernel without any permission", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/main.ts`;
    await Deno.writeTextFile(
      script,
      `import { init, relu, tensor } from ${JSON.stringify(import.meta.resolve("../mod.ts"))};\n` +
        `await init();\n` +
        `console.log(JSON.stringify(Array.from(await relu(tensor([-1, 2, -3, 4])).toArray())));\n`,
    );
    const command = new Deno.Command(Deno.execPath(), {
      // The repository's deno.json maps the package's npm dependencies, as JSR would for its users;
      // --no-prompt turns any permission request into a failure instead of a question.
      args: [
        "run",
        "--no-prompt",
        "--no-lock",
        "--quiet",
        "--config",
        fileURLToPath(import.meta.resolve("../deno.json")),
        script,
      ],
      cwd: dir,
      env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
    });
    const { code, stdout, stderr } = await command.output();
    const output = new TextDecoder().decode(stdout).trim();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.equal(output.split("\n").pop(), "[0,2,0,4]");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
