// Drives Debian's chromium (playwright-core) through the console's bulk import page: log in
// as an admin, upload a door table with a mistake and read the problem by row and column,
// upload the corrected table, see the changes, apply it, keep a screenshot.
//
//   node import.mjs BASE_URL USER PASSWORD BAD.csv GOOD.csv SCREENSHOT.png
//
// Prints lines the Rust test reads: "error ROW|COLUMN|MESSAGE" (the first problem shown),
// "added N", "applied MESSAGE", "done". Any failure exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, user, password, bad, good, shot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "campusgw-chromium-"));
const args = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args,
  viewport: { width: 1024, height: 900 },
});
try {
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/login");
  await page.fill("input[name=user]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("button[type=submit]")]);
  await page.click("header nav a[href='/import']");
  await page.waitForURL(base + "/import");

  await page.setInputFiles("#import-file", bad);
  await page.click("#import-preview");
  const row = page.locator("#import-errors tbody tr").first();
  await row.waitFor({ timeout: 30000 });
  const cells = await row.locator("td").allTextContents();
  console.log("error " + cells.join("|"));
  if (await page.locator("#import-apply").isVisible()) throw new Error("apply offered for a file with problems");

  await page.setInputFiles("#import-file", good);
  await page.click("#import-preview");
  await page.locator("#import-apply").waitFor({ state: "visible", timeout: 30000 });
  console.log("added " + (await page.locator("#diff-added li").count()));
  await page.click("#import-apply");
  const done = page.locator("#import-done");
  await done.waitFor({ state: "visible", timeout: 30000 });
  console.log("applied " + (await done.textContent()));
  await page.screenshot({ path: shot, fullPage: true });
  console.log("done");
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
