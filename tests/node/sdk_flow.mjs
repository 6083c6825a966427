// The npm client @saintno/comfyui-sdk, unchanged, against a running server: connect (HTTP +
// WS), queue EmptyImage -> SaveImage through its PromptBuilder/CallWrapper, and fetch the
// image from the URL it builds. Usage: node sdk_flow.mjs URL [BEARER_TOKEN]
import assert from "node:assert/strict";
import { ComfyApi, CallWrapper, PromptBuilder } from "@saintno/comfyui-sdk";

const [host, token] = process.argv.slice(2);
const options = token ? { credentials: { type: "bearer_token", token } } : {};
const api = new ComfyApi(host, "videosdgx-sdk-test", options).init(5, 500);
await api.waitForReady();

const workflow = {
  "3": { class_type: "EmptyImage", inputs: { width: 8, height: 8, batch_size: 1, color: 0x336699 } },
  "9": { class_type: "SaveImage", inputs: { images: ["3", 0], filename_prefix: "NodeSdk" } },
};
const builder = new PromptBuilder(workflow, ["width", "height"], ["images"])
  .setInputNode("width", "3.inputs.width")
  .setInputNode("height", "3.inputs.height")
  .setOutputNode("images", "9")
  .input("width", 40)
  .input("height", 24);

const result = await new Promise((resolve, reject) => {
  new CallWrapper(api, builder)
    .onFinished((data, promptId) => resolve({ data, promptId }))
    .onFailed((err) => reject(err))
    .run();
});
const images = result.data.images.images;
assert.equal(images.length, 1);
assert.match(images[0].filename, /^NodeSdk_\d{5}_\.png$/);

const url = api.getPathImage(images[0]);
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const png = Buffer.from(await (await fetch(url, { headers })).arrayBuffer());
assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [40, 24]);
api.destroy();
console.log(`sdk flow ok: ${result.promptId} -> ${url}`);
