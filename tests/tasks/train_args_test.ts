/** The train task's flags come from the methods' declarations; each mistake is named. */

import assert from "node:assert/strict";
import { parseTrainArgs, usage } from "../../tasks/train.ts";
import { UsageError } from "../../src/util/cli.ts";

function parsed(args: string[]) {
  const command = parseTrainArgs(args);
  assert.ok(!("help" in command));
  return command;
}

Deno.test("a method's declared options become its flags, checked and converted", () => {
  const defaults = parsed([
    "carpet",
    "--backbone",
    "mobilenet-v2",
    "--backbone-weights",
    "m.tflite",
  ]);
  assert.equal(defaults.method.name, "patchcore", "PatchCore is the default method");
  const resolved = defaults.method.resolveOptions(defaults.methodOptions);
  assert.equal(resolved.backbone, "mobilenet-v2");
  assert.equal(resolved.backboneWeights, "m.tflite");
  assert.equal(resolved.coresetRatio, 0.1);
  const ae = parsed([
    "carpet",
    "--method",
    "ae-ssim",
    "--epochs",
    "3",
    "--lr",
    "0.002",
    "--channels",
    "3",
  ]);
  assert.equal(ae.method.name, "ae-ssim");
  assert.deepEqual(ae.methodOptions, { epochs: "3", lr: "0.002", channels: "3" });
  assert.deepEqual(
    {
      epochs: ae.method.resolveOptions(ae.methodOptions, "quick").epochs,
      lr: ae.method.resolveOptions(ae.methodOptions, "quick").lr,
      channels: ae.method.resolveOptions(ae.methodOptions, "quick").channels,
      batch: ae.method.resolveOptions(ae.methodOptions, "quick").batch,
    },
    { epochs: 3, lr: 0.002, channels: 3, batch: 8 },
  );
  const gmm = parsed(["carpet", "--method", "gmm", "--image-size", "128", "--components", "bic"]);
  assert.deepEqual(gmm.method.resolveOptions(gmm.methodOptions).imageSize, 128);
  assert.equal(gmm.method.resolveOptions(gmm.methodOptions).components, "bic");
  const variation = parsed(["bottle", "--method", "variation", "--foreground", "auto"]);
  assert.equal(variation.method.resolveOptions(variation.methodOptions).foreground, "auto");
  assert.equal(parsed(["mine", "--kind", "texture"]).kind, "texture");
});

Deno.test("flags a method does not take, bad values and bad presets are refused by name", () => {
  const cases: [string[], RegExp][] = [
    [["bottle", "--method", "gmm", "--epochs", "3"], /--epochs is not an option of gmm/],
    [["bottle", "--method", "variation", "--batch", "8"], /--batch is not an option of variation/],
    [["carpet", "--method", "gmm", "--lr", "0.1"], /--lr is not an option of gmm/],
    [["carpet", "--method", "gmm", "--preset", "quick"], /gmm has no presets/],
    [["carpet", "--method", "gmm", "--resume"], /--resume: gmm writes no checkpoints/],
    [["carpet", "--method", "ae-ssim", "--epochs", "0"], /--epochs expects a positive integer/],
    [["carpet", "--method", "ae-l2", "--lr=-1"], /--lr expects a number > 0, got "-1"/],
    [["carpet", "--method", "ae-ssim", "--channels", "2"], /--channels expects 1 or 3/],
    [["carpet", "--epochs", "3"], /--epochs is not an option of patchcore/],
    [
      ["carpet", "--backbone", "vgg16"],
      /--backbone expects resnet50 or mobilenet-v2 or mobilenet-v1/,
    ],
    [["carpet", "--backbone-weights", " "], /--backbone-weights expects a path/],
    [["carpet", "--coreset-ratio", "1.5"], /--coreset-ratio expects a number > 0 and ≤ 1/],
    [["carpet", "--method", "gmm", "--components", "many"], /--components expects bic or 1/],
    [["carpet", "--kind", "fabric"], /--kind.*texture.*object/],
    [["carpet", "--seed", "x"], /--seed expects an integer/],
    [["carpet", "--frobnicate"], /Unknown flag "--frobnicate"/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(() => parseTrainArgs(args), (error: Error) => {
      assert.ok(error instanceof UsageError, `${args.join(" ")}: ${error}`);
      assert.match(error.message, pattern);
      return true;
    });
  }
});

Deno.test("--help lists every method's options; --help --method NAME one method's", () => {
  const all = parseTrainArgs(["--help"]);
  assert.ok("help" in all);
  for (
    const word of [
      "patchcore",
      "padim",
      "ae-ssim",
      "ae-l2",
      "gmm",
      "variation",
      "--epochs",
      "--kind",
    ]
  ) {
    assert.ok(all.help.includes(word), word);
  }
  assert.match(usage("patchcore"), /--backbone-weights PATH\n +a local copy of the backbone's/);
  const gmm = usage("gmm");
  assert.match(gmm, /--sensitivity N/);
  assert.ok(!gmm.includes("--epochs"));
  assert.match(
    usage("ae-ssim"),
    /--epochs N +epochs over the patch set\n +a positive integer; preset: quick 6, paper 200\n/,
  );
});
