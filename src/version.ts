/** The package version, from deno.json, recorded in every run's config. */

import config from "../deno.json" with { type: "json" };

/** This package's version. */
export const VERSION: string = config.version;
