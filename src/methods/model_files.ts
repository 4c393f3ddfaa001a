/**
 * The files a saved model is made of: `model.safetensors` (its tensors) and a JSON file of its
 * settings tagged with a format name, both written atomically; reading checks the tag, and each
 * tensor's presence and size, naming the file when one is wrong.
 */

import { join } from "node:path";
import { encodeSafetensors, loadSafetensors, type StoredTensor } from "../nn/checkpoint.ts";
import { InputError } from "../util/errors.ts";
import { jsonForMessage, readJsonFile, writeFileAtomic, writeJsonAtomic } from "../util/fs.ts";
import { checkOptionValue, type MethodDefinition } from "./method.ts";

/** The tensors' file in a model folder. */
export const MODEL_TENSORS_FILE = "model.safetensors";

/** Writes a model's tensors and its settings JSON (which carries `format`) into `directory`. */
export async function saveModelFiles<Settings extends { format: string }>(
  directory: string,
  settingsFile: string,
  settings: Settings,
  tensors: Map<string, StoredTensor>,
): Promise<void> {
  await writeFileAtomic(
    join(directory, MODEL_TENSORS_FILE),
    encodeSafetensors(tensors, { format: settings.format }),
  );
  await writeJsonAtomic(join(directory, settingsFile), settings);
}

/** A model folder as read by {@link readModelFiles}. */
export interface ModelFiles<Settings> {
  /** The settings JSON. */
  settings: Settings;
  /**
   * A tensor by name; with `size`, it must hold that many values.
   *
   * @throws InputError naming the tensors' file when the tensor is missing or of another size
   */
  tensor(name: string, size?: number): StoredTensor;
}

/**
 * Reads a model folder written by {@link saveModelFiles}.
 *
 * @param what the model in words, for messages ("PaDiM model")
 * @throws InputError naming the file when the settings cannot be read, are not a JSON object or
 *   are of another format; CheckpointError (an InputError) when the tensors cannot be read
 */
export async function readModelFiles<Settings extends { format: string }>(
  directory: string,
  settingsFile: string,
  format: string,
  what: string,
): Promise<ModelFiles<Settings>> {
  const settingsPath = join(directory, settingsFile);
  const settings = await readJsonFile<unknown>(
    settingsPath,
    (reason) => new InputError(`Cannot read ${what} "${settingsPath}": ${reason}`),
  );
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    throw new InputError(
      `"${settingsPath}" is not a ${what}: it holds ${jsonForMessage(settings)}; expected a ` +
        `JSON object with "format": "${format}"`,
    );
  }
  const found = (settings as { format?: unknown }).format;
  if (found !== format) {
    throw new InputError(
      `"${settingsPath}" is not a ${what} (format ${jsonForMessage(found)}, expected "${format}")`,
    );
  }
  const tensorsPath = join(directory, MODEL_TENSORS_FILE);
  const { tensors } = await loadSafetensors(tensorsPath);
  return {
    settings: settings as Settings,
    tensor(name, size) {
      const stored = tensors.get(name);
      if (!stored) throw new InputError(`"${tensorsPath}" lacks tensor "${name}"`);
      if (size !== undefined && stored.data.length !== size) {
        throw new InputError(
          `"${tensorsPath}": "${name}" has ${stored.data.length} values, expected ${size}`,
        );
      }
      return stored;
    },
  };
}

/**
 * A saved model's `settings` object, checked against its method's option declarations, so that a
 * damaged or foreign file is refused with an error naming it instead of failing later: every
 * option named in `required` must be present, and every declared option present must hold a value
 * the option accepts.
 *
 * @param path the settings file, for messages
 * @param method the method whose options the settings are
 * @param value what the file's `settings` holds
 * @param required the options the model cannot do without
 * @throws InputError naming the file and the first bad setting
 */
export function checkSavedSettings<Settings>(
  path: string,
  method: Pick<MethodDefinition, "name" | "options">,
  value: unknown,
  required: readonly string[],
): Settings {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InputError(
      `"${path}": "settings" holds ${jsonForMessage(value)}; expected a JSON object`,
    );
  }
  const settings = value as Record<string, unknown>;
  for (const name of required) {
    if (settings[name] === undefined || settings[name] === null) {
      throw new InputError(`"${path}": "settings" lacks "${name}"`);
    }
  }
  for (const [name, spec] of Object.entries(method.options)) {
    if (settings[name] === undefined || settings[name] === null) continue;
    try {
      checkOptionValue(method.name, name, spec, settings[name]);
    } catch (error) {
      throw new InputError(`"${path}": "settings.${name}" is invalid: ${(error as Error).message}`);
    }
  }
  return settings as Settings;
}
