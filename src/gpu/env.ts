/**
 * Reading an environment variable from library code, which must work with no permissions (the
 * kernel choices of src/gpu read their overrides so).
 *
 * @module
 */

/**
 * The value of environment variable `name`, or undefined when it is unset, empty, or the process
 * may not read it. The permission is queried first: querying never prompts, where `Deno.env.get`
 * would, and any failure counts as unset.
 */
export function optionalEnv(name: string): string | undefined {
  try {
    const status = Deno.permissions.querySync({ name: "env", variable: name });
    if (status.state !== "granted") return undefined;
    const value = Deno.env.get(name);
    return value === "" ? undefined : value;
  } catch {
    return undefined;
  }
}
