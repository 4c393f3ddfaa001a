import assert from "node:assert/strict";
import { join } from "node:path";
import {
  compareNames,
  displayPath,
  isDirectory,
  isFile,
  JSON_FILE_MAX_BYTES,
  jsonForMessage,
  listDirectory,
  readJsonFile,
  writeFileAtomic,
  writeJsonAtomic,
} from "../../src/util/fs.ts";
import { InputError } from "../../src/util/errors.ts";

Deno.test("listDirectory lists files or folders, by extension, without hidden names, in order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const name of ["10.png", "2.PNG", "1.jpg", "notes.txt", ".hidden.png", "._2.png"]) {
      await Deno.writeTextFile(join(dir, name), "");
    }
    for (const name of ["b", "a10", "a9", ".git"]) await Deno.mkdir(join(dir, name));
    // Numbers in names sort by value, extensions match whatever their case.
    assert.deepEqual(await listDirectory(dir, { kind: "file", extensions: [".png", ".jpg"] }), [
      "1.jpg",
      "2.PNG",
      "10.png",
    ]);
    assert.deepEqual(await listDirectory(dir, { kind: "directory" }), ["a9", "a10", "b"]);
    assert.deepEqual(
      await listDirectory(dir, { kind: "file", extensions: [".png"], includeHidden: true }),
      ["._2.png", ".hidden.png", "2.PNG", "10.png"],
    );
    await assert.rejects(
      () => listDirectory(join(dir, "missing"), { kind: "file" }),
      (error: Error) =>
        /Cannot list ".*missing"/.test(error.message) &&
        error.cause instanceof Deno.errors.NotFound,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compareNames orders numbers by value", () => {
  assert.deepEqual(["10", "9", "b", "a"].sort(compareNames), ["9", "10", "a", "b"]);
});

Deno.test("JSON written atomically reads back; a bad file fails in the caller's words", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "nested", "value.json");
    await writeJsonAtomic(path, { a: [1, 2] });
    assert.equal(await Deno.readTextFile(path), '{\n  "a": [\n    1,\n    2\n  ]\n}\n');
    assert.deepEqual(await readJsonFile(path, (reason) => new Error(reason)), { a: [1, 2] });
    assert.deepEqual([...Deno.readDirSync(join(dir, "nested"))].map((e) => e.name), [
      "value.json",
    ]);
    await writeFileAtomic(join(dir, "broken.json"), "{ not json");
    // Whatever error the caller makes, a bad file is an InputError with its message.
    const failure = (reason: string) => new RangeError(`settings unreadable: ${reason}`);
    await assert.rejects(
      () => readJsonFile(join(dir, "broken.json"), failure),
      (error: unknown) =>
        error instanceof InputError && /^settings unreadable: .*JSON/.test(error.message) &&
        error.cause instanceof SyntaxError,
    );
    await assert.rejects(
      () => readJsonFile(join(dir, "missing.json"), failure),
      (error: unknown) =>
        error instanceof InputError && /settings unreadable: .*missing\.json/.test(error.message),
    );
    // The caller's own InputError (or subclass) is thrown as it is.
    class SettingsError extends InputError {}
    await assert.rejects(
      () => readJsonFile(join(dir, "broken.json"), (reason) => new SettingsError(reason)),
      SettingsError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("displayPath shortens paths below the working folder only", () => {
  assert.equal(displayPath(join(Deno.cwd(), "out", "eval")), join("out", "eval"));
  assert.equal(displayPath("/somewhere/else"), "/somewhere/else");
  assert.equal(displayPath(Deno.cwd()), Deno.cwd());
});

Deno.test("isDirectory and isFile tell folders, files and missing paths apart", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "a.txt");
  await Deno.writeTextFile(file, "x");
  assert.equal(await isDirectory(dir), true);
  assert.equal(await isFile(dir), false);
  assert.equal(await isFile(file), true);
  assert.equal(await isDirectory(file), false);
  assert.equal(await isFile(join(dir, "missing")), false);
  assert.equal(await isDirectory(join(dir, "missing")), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a JSON file over 8 MiB is refused before it is read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A valid document, but one whose parse would take seconds: nested lists, 8 MiB of them.
    const depth = JSON_FILE_MAX_BYTES / 2 + 1;
    const path = join(dir, "config.json");
    await Deno.writeTextFile(path, "[".repeat(depth) + "]".repeat(depth));
    await assert.rejects(
      () => readJsonFile(path, (reason) => new InputError(`Cannot read "${path}": ${reason}`)),
      (error: unknown) =>
        error instanceof InputError &&
        error.message === `Cannot read "${path}": the file has ${2 * depth} bytes, over the ` +
            `${JSON_FILE_MAX_BYTES} (8 MiB) a JSON settings file may have`,
    );
    await Deno.writeTextFile(path, "[".repeat(1000) + "]".repeat(1000));
    assert.equal((await readJsonFile<unknown[]>(path, (reason) => new Error(reason))).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("jsonForMessage shows a value briefly, however large or deep", () => {
  assert.equal(jsonForMessage("format"), '"format"');
  assert.equal(jsonForMessage(undefined), "undefined");
  assert.equal(jsonForMessage({ a: [1, 2] }), '{"a":[1,2]}');
  const long = jsonForMessage("x".repeat(1000), 20);
  assert.equal(long, `"${"x".repeat(16)}...`);
  assert.equal(long.length, 20);
  // A list nested a million deep, which a template string cannot turn into text.
  const deep = JSON.parse("[".repeat(1e6) + "]".repeat(1e6));
  assert.throws(() => `${deep}`, RangeError);
  assert.equal(jsonForMessage(deep, 8), "[[[[[...");
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.equal(jsonForMessage(cycle), "{…}");
  assert.equal(jsonForMessage([cycle]), "[…]");
});
