/** The README's set-up script: root runs it without sudo, a user through sudo; apt-get update first. */

import assert from "node:assert/strict";
import { join } from "node:path";

const script = new URL("../setup.sh", import.meta.url).pathname;

/** The commands `setup.sh --print` would run, with `id -u` answering `uid`. */
async function printedCommands(uid: number): Promise<string[]> {
  const shims = await Deno.makeTempDir({ prefix: "anodet-setup-" });
  try {
    // `id` and `sudo` stand-ins, so that the test sees both cases whoever runs it.
    await Deno.writeTextFile(join(shims, "id"), `#!/bin/sh\necho ${uid}\n`, { mode: 0o755 });
    await Deno.writeTextFile(join(shims, "sudo"), `#!/bin/sh\nexec "$@"\n`, { mode: 0o755 });
    const output = await new Deno.Command("sh", {
      args: [script, "--print"],
      env: { PATH: `${shims}:${Deno.env.get("PATH")}` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    return new TextDecoder().decode(output.stdout).trim().split("\n");
  } finally {
    await Deno.remove(shims, { recursive: true });
  }
}

Deno.test("setup.sh: as root it needs no sudo, and it updates the package lists first", async () => {
  const commands = await printedCommands(0);
  assert.equal(commands[0], "apt-get update");
  assert.ok(commands.every((command) => !command.includes("sudo")), commands.join("\n"));
});

Deno.test("setup.sh: as a user every command goes through sudo", async () => {
  const commands = await printedCommands(1000);
  assert.equal(commands[0], "sudo apt-get update");
  assert.ok(commands.every((command) => command.startsWith("sudo ")), commands.join("\n"));
});
