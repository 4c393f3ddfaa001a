/**
 * The files a saved model is made of: `model.safetensors` (its tensors) and a JSON file of its
 * settings tagged with a format name, both written atomically; reading checks the tag, and each
 * tensor's presence and size, naming the file when one is wrong.
 */

import { join } from "node:path";
import { encodeSafetensors, loadSafetensors, type StoredTensor } from "../nn/checkpoint.ts";
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from "../util/fs.ts";

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
   * @throws Error naming the tensors' file when the tensor is missing or of another size
   */
  tensor(name: string, size?: number): StoredTensor;
}

/**
 * Reads a model folder written by {@link saveModelFiles}.
 *
 * @param what the model in words, for messages ("PaDiM model")
 * @throws Error naming the file when the settings cannot be read or are of another format
 */
export async function readModelFiles<Settings extends { format: string }>(
  directory: string,
  settingsFile: string,
  format: string,
  what: string,
): Promise<ModelFiles<Settings>> {
  const settingsPath = join(directory, settingsFile);
  const settings = await readJsonFile<Settings>(
    settingsPath,
    (reason) => new Error(`Cannot read ${what} "${settingsPath}": ${reason}`),
  );
  if (settings?.format !== format) {
    throw new Error(`"${settingsPath}" is not a ${what} (format ${settings?.format})`);
  }
  const tensorsPath = join(directory, MODEL_TENSORS_FILE);
  const { tensors } = await loadSafetensors(tensorsPath);
  return {
    settings,
    tensor(name, size) {
      const stored = tensors.get(name);
      if (!stored) throw new Error(`"${tensorsPath}" lacks tensor "${name}"`);
      if (size !== undefined && stored.data.length !== size) {
        throw new Error(
          `"${tensorsPath}": "${name}" has ${stored.data.length} values, expected ${size}`,
        );
      }
      return stored;
    },
  };
}
