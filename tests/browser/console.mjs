// Drives Debian's chromium (playwright-core, no browser download) through the console:
// log in, wait for the test to raise a fire alarm (a line "fire" on stdin), see the alarm
// card appear, acknowledge it with a note, see the acknowledgement, keep a screenshot.
//
//   node console.mjs BASE_URL USER PASSWORD SCREENSHOT.png
//
// Prints lines the Rust test reads: "ready", "alarm_ms N" (stdin line to card shown),
// "acknowledged", "done". Any failure exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [base, user, password, shot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "campusgw-chromium-"));
// Flags from the machine notes: no sandbox (root in a container), no GPU, no network
// chatter of the browser's own.
const args = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args,
  viewport: { width: 1024, height: 768 },
});
try {
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/login");
  await page.fill("input[name=user]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("button[type=submit]")]);
  // The live stream is open when the dot turns on.
  await page.waitForSelector("#live-dot.on", { timeout: 30000 });
  console.log("ready");
  await nextLine();
  const t0 = Date.now();
  const card = page.locator("#alarms li.alarm").first();
  await card.waitFor({ timeout: 30000 });
  console.log("alarm_ms " + (Date.now() - t0));
  await card.locator("input.note").fill("guard on the way");
  await card.locator("button.ack").click();
  await page.locator("#alarms li.alarm.st-acknowledged").first().waitFor({ timeout: 30000 });
  const cards = await page.locator("#alarms li.alarm").count();
  if (cards !== 1) throw new Error(`one alarm, ${cards} cards on the board`);
  console.log("acknowledged");
  await page.screenshot({ path: shot, fullPage: true });
  console.log("done");
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  lines.close();
}
