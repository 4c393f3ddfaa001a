/**
 * The methods the CLI and library find by name. A method that ships with the package is one folder
 * under src/methods/ and one line in {@link BUILTIN_METHODS}; a user's own method is added with
 * {@link registerMethod}.
 */

import { aeL2, aeSsim } from "./ae/ae.ts";
import { anogan } from "./anogan/anogan.ts";
import { cnnDictMethod } from "./cnn_dict/cnn_dict.ts";
import { gmmMethod } from "./gmm/model.ts";
import { inpaint } from "./inpaint/inpaint.ts";
import type { MethodDefinition } from "./method.ts";
import { padimMethod } from "./padim/padim.ts";
import { patchcoreMethod } from "./patchcore/patchcore.ts";
import { variationMethod } from "./variation/model.ts";

/** The methods that ship with the package, in the order `--help` lists them. */
export const BUILTIN_METHODS: readonly MethodDefinition[] = [
  patchcoreMethod,
  padimMethod,
  cnnDictMethod,
  inpaint,
  aeSsim,
  aeL2,
  gmmMethod,
  variationMethod,
  anogan,
];

const registry = new Map<string, MethodDefinition>(BUILTIN_METHODS.map((m) => [m.name, m]));

/** Makes a method (declared with `defineMethod`) available by name; a name can be taken once. */
export function registerMethod(method: MethodDefinition): void {
  if (registry.has(method.name)) throw new Error(`A method "${method.name}" is already registered`);
  registry.set(method.name, method);
}

/** The method called `name`; the error lists the known ones. */
export function getMethod(name: string): MethodDefinition {
  const method = registry.get(name);
  if (!method) {
    throw new Error(`Unknown method "${name}". Known methods: ${[...registry.keys()].join(", ")}`);
  }
  return method;
}

/** Every method, built-in ones first. */
export function listMethods(): MethodDefinition[] {
  return [...registry.values()];
}
