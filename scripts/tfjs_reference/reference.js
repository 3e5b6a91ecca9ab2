// Computes reference activations of nsfwjs's MobileNetV2 with TensorFlow.js
// itself (pure-JS CPU backend), for the test that checks deepsim's import
// (pretrained/tfjs). Run once; its output is testdata/mobilenetv2/.
//
//   tar xzf nsfwjs-4.4.0.tgz -C /tmp/nsfw      # make deps fetches the tarball
//   npm ci && node reference.js /tmp/nsfw/package ../../testdata/mobilenetv2
//
// It writes two synthetic 224x224 input images (input-N.png), the outputs
// of the taps below for each (input-N.TAP.f32: float32 little-endian,
// NHWC as TF.js computes them) and reference.json, which lists them.
"use strict";
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");
const { PNG } = require("pngjs");

const TAPS = ["block_3_project_BN", "block_10_project_BN", "dense_3"];
const SIZE = 224;
const IMAGES = 2;

// A seeded generator (mulberry32), so that the inputs are the same on
// every run.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A synthetic photograph: a colour gradient, soft blobs, oriented stripes
// and grain, so that every layer sees structure at several scales.
function image(seed) {
  const r = rng(seed);
  const px = new Uint8Array(SIZE * SIZE * 3);
  const blobs = Array.from({ length: 6 }, () => [r() * SIZE, r() * SIZE, 10 + r() * 50, r(), r(), r()]);
  const waves = Array.from({ length: 3 }, () => [r() * Math.PI, 0.05 + r() * 0.4, r() * 6, r()]);
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++)
      for (let c = 0; c < 3; c++) {
        let v = 0.25 + 0.5 * ((x + (c + 1) * y) / (SIZE * (c + 2)));
        for (const [bx, by, br, ...col] of blobs)
          v += 0.5 * (col[c] - 0.5) * Math.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * br * br));
        for (const [a, f, p, amp] of waves)
          v += 0.15 * amp * Math.sin(f * (x * Math.cos(a) + y * Math.sin(a)) + p + c);
        v += 0.04 * (r() - 0.5);
        px[(y * SIZE + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v * 255)));
      }
  return px;
}

function writePNG(file, px) {
  const png = new PNG({ width: SIZE, height: SIZE });
  for (let i = 0; i < SIZE * SIZE; i++) {
    png.data[4 * i] = px[3 * i];
    png.data[4 * i + 1] = px[3 * i + 1];
    png.data[4 * i + 2] = px[3 * i + 2];
    png.data[4 * i + 3] = 255;
  }
  fs.writeFileSync(file, PNG.sync.write(png));
}

async function main() {
  const [pkg, out] = process.argv.slice(2);
  if (!pkg || !out) throw new Error("usage: node reference.js NSFWJS_PACKAGE_DIR OUT_DIR");
  await tf.setBackend("cpu");
  const dir = path.join(pkg, "dist/models/mobilenet_v2");
  // The bundled files are CommonJS modules: the model object, and one
  // base64 string per weight shard.
  const model = require(path.resolve(dir, "model.min.js"));
  const shards = model.weightsManifest[0].paths.map((p) =>
    Buffer.from(require(path.resolve(dir, p + ".min.js")), "base64"));
  const weightData = new Uint8Array(Buffer.concat(shards)).buffer;
  const net = await tf.loadLayersModel(tf.io.fromMemory({
    modelTopology: model.modelTopology,
    weightSpecs: model.weightsManifest.flatMap((g) => g.weights),
    weightData,
  }));
  const tapped = tf.model({ inputs: net.inputs, outputs: TAPS.map((t) => net.getLayer(t).output) });
  fs.mkdirSync(out, { recursive: true });
  const index = { model: "nsfwjs@4.4.0 dist/models/mobilenet_v2", backend: tf.getBackend(),
    tfjs: tf.version.tfjs, input_scale: "x/255", images: [] };
  for (let n = 0; n < IMAGES; n++) {
    const px = image(1000 + n);
    const name = `input-${n}.png`;
    writePNG(path.join(out, name), px);
    const x = tf.tensor4d(Float32Array.from(px, (v) => v / 255), [1, SIZE, SIZE, 3]);
    const ys = tapped.predict(x);
    const entry = { input: name, taps: {} };
    TAPS.forEach((t, i) => {
      const file = `input-${n}.${t}.f32`;
      fs.writeFileSync(path.join(out, file), Buffer.from(ys[i].dataSync().buffer));
      entry.taps[t] = { file, shape: ys[i].shape };
    });
    index.images.push(entry);
  }
  fs.writeFileSync(path.join(out, "reference.json"), JSON.stringify(index, null, 2) + "\n");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
