// The official ComfyUI web frontend (PyPI comfyui-frontend-package, served by us) in Debian's
// headless Chromium, driven by Playwright: the page loads with no failed request to our
// server and no page error, the node library lists EmptyImage, an EmptyImage -> SaveImage
// graph queued with the Run button shows its output image, and a screenshot is saved.
// Usage: node frontend.mjs URL ARTIFACT_DIR
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, artifacts] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // No GPU, no sandbox as root, and none of Chromium's own background traffic (the
  // machine's network is closed).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });

const ours = (u) => u.startsWith(url);
const failures = []; // requests to our server that failed, and uncaught page errors
const log = [];
page.on("console", (m) => {
  log.push(`${m.type()}: ${m.text()} @ ${m.location().url}`);
});
page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
page.on("requestfailed", (r) => {
  // ERR_ABORTED is the page cancelling its own request, not the server failing it.
  const error = r.failure()?.errorText;
  if (ours(r.url()) && error !== "net::ERR_ABORTED") failures.push(`${r.url()}: ${error}`);
});
page.on("response", (r) => {
  // Template thumbnails come from the optional media packages (`pip install
  // comfyui-workflow-templates`); without them the 404 is the right answer.
  const thumbnail = /\/templates\/.*\.(webp|png|jpg|mp4|mp3)$/.test(r.url());
  if (ours(r.url()) && r.status() >= 400 && !thumbnail) failures.push(`${r.status()} ${r.url()}`);
});

try {
  await page.goto(url);
  await page.waitForFunction(() => window.app?.canvas && window.LiteGraph, null, { timeout: 90000 });
  // A first visit opens the template browser; close it like a user would.
  await page.waitForTimeout(1500);
  await page.keyboard.press("Escape");

  // The node library, searched for EmptyImage (listed by its display name).
  await page.getByRole("button", { name: /^Node Library/ }).click();
  await page.getByPlaceholder(/Search/i).first().fill("EmptyImage");
  await page.getByText("Empty Image", { exact: true }).first().waitFor({ timeout: 20000 });
  await page.getByRole("button", { name: /^Node Library/ }).click();

  // EmptyImage -> SaveImage built from our /object_info definitions, queued with Run.
  await page.evaluate(() => {
    const graph = window.app.graph;
    graph.clear();
    const empty = window.LiteGraph.createNode("EmptyImage");
    empty.pos = [120, 160];
    graph.add(empty);
    for (const [name, value] of [["width", 96], ["height", 64], ["color", 0x2266aa]]) {
      empty.widgets.find((w) => w.name === name).value = value;
    }
    const save = window.LiteGraph.createNode("SaveImage");
    save.pos = [520, 160];
    graph.add(save);
    empty.connect(0, save, 0);
    window.__saveNode = save;
    window.app.canvas.setDirty(true, true);
  });
  const [image] = await Promise.all([
    page.waitForResponse((r) => ours(r.url()) && r.url().includes("/api/view?") && r.status() === 200,
                         { timeout: 60000 }),
    page.getByTestId("queue-button").click(),
  ]);
  assert.equal(image.headers()["content-type"], "image/png");
  assert.match(image.url(), /filename=ComfyUI_\d{5}_\.png/);
  await page.waitForFunction(() => {
    const img = window.__saveNode.imgs?.[0];
    return img?.complete && img.naturalWidth === 96 && img.naturalHeight === 64;
  }, null, { timeout: 30000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: join(artifacts, "frontend.png") });
  assert.deepEqual(failures, []);
  console.log("frontend ok");
} catch (e) {
  await page.screenshot({ path: join(artifacts, "frontend-failure.png") }).catch(() => {});
  console.error(failures.join("\n"));
  throw e;
} finally {
  writeFileSync(join(artifacts, "frontend-console.log"), log.join("\n") + "\n");
  await browser.close();
}
