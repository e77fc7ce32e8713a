// Drives Debian's chromium (playwright-core) to an alarm's page and checks that the
// thumbnail of its camera snapshot loads as an image (decoded by the browser, not only
// served): gateway/tests/console_snapshots.rs.
//
//   node snapshot.mjs BASE_URL USER PASSWORD ALARM_ID
//
// Prints "img WIDTHxHEIGHT" (the decoded size of the first thumbnail), then "done". Any
// failure exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, user, password, alarm] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "campusgw-chromium-"));
const args = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
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
  await page.goto(base + "/alarms/" + encodeURIComponent(alarm));
  const img = page.locator("#alarm-snapshots img").first();
  await img.waitFor({ timeout: 30000 });
  // complete with a natural size: the browser fetched and decoded the JPEG.
  await page.waitForFunction(
    () => {
      const i = document.querySelector("#alarm-snapshots img");
      return i && i.complete && i.naturalWidth > 0;
    },
    null,
    { timeout: 30000 },
  );
  const size = await img.evaluate((i) => `${i.naturalWidth}x${i.naturalHeight}`);
  console.log("img " + size);
  console.log("done");
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
