import assert from "node:assert/strict";
import { formatDuration, ProgressBar, type ProgressStream } from "../../src/util/progress.ts";

/** A stream that records what is written and claims to be a terminal or not. */
function fakeStream(terminal: boolean): ProgressStream & { text: () => string } {
  const chunks: Uint8Array[] = [];
  return {
    writeSync: (bytes) => {
      chunks.push(bytes.slice());
      return bytes.length;
    },
    isTerminal: () => terminal,
    text: () => chunks.map((bytes) => new TextDecoder().decode(bytes)).join(""),
  };
}

Deno.test("ProgressBar redraws in place on a terminal, throttled", () => {
  const stream = fakeStream(true);
  let now = 0;
  const bar = new ProgressBar({ label: "bottle", total: 10, unit: "maps", stream, now: () => now });
  now = 1000;
  bar.update(1);
  now = 1050; // within the 100 ms redraw interval: not drawn
  bar.update(2);
  now = 2000;
  bar.update(5, { loss: 0.012345 });
  assert.equal(
    bar.render(),
    "bottle  [############............]  5/10  50%  4.00 maps/s  ETA 1s  loss=0.01235",
  );
  now = 4000;
  bar.done();
  const text = stream.text();
  assert.equal(text.split("\r").length - 1, 3, "three redraws");
  assert.ok(!text.includes("2/10"));
  assert.ok(text.includes("\x1b[K"));
  assert.ok(text.endsWith("\n"));
  assert.match(text, /5\/10 +50% .* in 4s/);
  bar.update(7); // ignored after done
  assert.equal(stream.text(), text);
});

Deno.test("ProgressBar's rate counts only the work it saw, so a late or resumed bar is not wild", () => {
  let now = 0;
  const bar = new ProgressBar({
    label: "ae-ssim carpet",
    total: 120,
    unit: "steps",
    stream: fakeStream(false),
    now: () => now,
  });
  now = 1; // created just before its first report, with 60 steps already done (a resumed run)
  bar.update(60);
  assert.ok(!bar.render().includes("steps/s"), "no rate from a single report");
  assert.ok(!bar.render().includes("ETA"));
  now = 10_001;
  bar.update(80);
  assert.match(bar.render(), /80\/120 .* 2\.00 steps\/s {2}ETA 20s/);
});

Deno.test("ProgressBar prints occasional plain lines without a terminal", () => {
  const stream = fakeStream(false);
  let now = 0;
  const bar = new ProgressBar({
    label: "carpet",
    total: 100,
    stream,
    now: () => now,
    lineIntervalMs: 10_000,
  });
  for (let i = 1; i <= 100; i++) {
    now = i * 500; // 50 s in all: a line at 0.5 s, 10.5, 20.5, 30.5, 40.5, then the final one
    bar.update(i);
  }
  bar.done();
  const lines = stream.text().trimEnd().split("\n");
  assert.equal(lines.length, 6);
  assert.ok(!stream.text().includes("\r"));
  assert.match(lines[0], /^carpet +\[.*\] +1\/100 +1%/);
  assert.match(lines.at(-1)!, /100\/100 +100% +2\.00 it\/s +in 50s$/);
});

Deno.test("ProgressBar: log keeps the bar intact, disabled bars write nothing", () => {
  const stream = fakeStream(true);
  const bar = new ProgressBar({ label: "x", total: 0, stream, now: () => 0 });
  bar.update(3);
  bar.log("hello");
  bar.done();
  assert.equal(
    stream.text(),
    "\rx  3\x1b[K\r\x1b[Khello\n\rx  3\x1b[K\rx  3  in 0s\x1b[K\n",
  );

  const silent = fakeStream(true);
  const off = new ProgressBar({ label: "y", total: 5, stream: silent, enabled: false });
  off.update(1, { a: 1 });
  off.tick();
  off.log("nothing");
  off.done();
  assert.equal(silent.text(), "");
});

Deno.test("formatDuration", () => {
  assert.equal(formatDuration(4.4), "4s");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(7620), "2h07m");
  assert.equal(formatDuration(Infinity), "?");
  assert.equal(formatDuration(-1), "?");
});
