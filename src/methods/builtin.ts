/** Registers the methods that ship with the package, so the CLI and library find them by name. */

import { type MethodDefinition, registerMethod } from "./method.ts";
import { aeL2, aeSsim } from "./ae/ae.ts";
import { gmmMethod } from "./gmm/model.ts";
import { variationMethod } from "./variation/model.ts";

registerMethod(aeSsim as MethodDefinition);
registerMethod(aeL2 as MethodDefinition);
registerMethod(gmmMethod as unknown as MethodDefinition);
registerMethod(variationMethod as unknown as MethodDefinition);
