/** The shape of the source tree: the folders of src/ import each other without cycles. */

import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const srcRoot = new URL("../src/", import.meta.url).pathname;

/** Every .ts file under a folder, as paths relative to src/. */
function sourceFiles(folder = srcRoot): string[] {
  return [...Deno.readDirSync(folder)].flatMap((entry) => {
    const path = join(folder, entry.name);
    if (entry.isDirectory) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [relative(srcRoot, path)] : [];
  });
}

/** The top-level folder of src/ a file belongs to ("methods" for methods/ae/ae.ts). */
function topFolder(file: string): string {
  return file.split("/")[0];
}

Deno.test("the folders of src/ import each other without a cycle", () => {
  const edges = new Map<string, Set<string>>();
  for (const file of sourceFiles()) {
    const text = Deno.readTextFileSync(join(srcRoot, file));
    for (const match of text.matchAll(/(?:from|import) "(\.{1,2}\/[^"]+)"/g)) {
      const target = normalize(join(dirname(file), match[1]));
      if (target.startsWith("..")) continue; // deno.json, outside src/
      const [from, to] = [topFolder(file), topFolder(target)];
      if (from === to || !to || to.endsWith(".ts")) continue;
      if (!edges.has(from)) edges.set(from, new Set());
      edges.get(from)!.add(to);
    }
  }
  const cycles: string[] = [];
  const visit = (folder: string, path: string[]) => {
    for (const next of edges.get(folder) ?? []) {
      if (path.includes(next)) cycles.push([...path.slice(path.indexOf(next)), next].join(" → "));
      else visit(next, [...path, next]);
    }
  };
  for (const folder of edges.keys()) visit(folder, [folder]);
  assert.deepEqual(cycles, [], `import cycles between folders of src/:\n${cycles.join("\n")}`);
  assert.ok(edges.get("methods")?.has("eval"), "the scan sees the methods → eval imports");
  assert.ok(!edges.get("eval")?.has("methods"), "eval reads run folders through src/run");
});
