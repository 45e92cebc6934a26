#!/usr/bin/env node
// rr's WebSocket load client for tools/bench.py's websocket_msg_throughput row.
//
//   node tools/bench_ws/client.js --url ws://127.0.0.1:8000/ws --connections 50 --duration 10 [--size 1024]
//
// Opens --connections WebSockets with node's `ws` package (no permessage-deflate
// offered), each a closed loop: send one text message of --size bytes, wait for
// its echo, check it, send the next, until --duration seconds have passed since
// the first connection opened. Prints one line, `BENCH_JSON {...}`, in the shape
// tools/bench_lua/report.lua prints for wrk (requests = echoed messages,
// duration_us, errors, latency_us of each round trip), and `msg/s N` after it.
// Every wait is bounded: a connection that has not finished 5 s after the
// deadline counts as a timeout and the process exits anyway.
"use strict";

const WebSocket = require("ws");

function parseArgs(argv) {
  const opts = { url: "", connections: 50, duration: 10, size: 1024 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in opts) || i + 1 >= argv.length) {
      console.error(`usage: client.js --url ws://HOST:PORT/PATH [--connections N] [--duration S] [--size B]`);
      process.exit(2);
    }
    opts[key] = key === "url" ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!opts.url.startsWith("ws://") || !(opts.connections >= 1) || !(opts.duration > 0) || !(opts.size >= 0)) {
    console.error("client.js: --url must be ws://..., --connections >= 1, --duration > 0, --size >= 0");
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const payload = "x".repeat(opts.size);
const errors = { connect: 0, read: 0, write: 0, status: 0, timeout: 0 };
const latencies = [];
let count = 0;
let started = null; // when the first connection opened
let deadline = null;
let open = opts.connections;

function finish() {
  const end = Math.min(Number(process.hrtime.bigint()), deadline ?? Number(process.hrtime.bigint()));
  const elapsedNs = started === null ? 0 : end - started;
  latencies.sort((a, b) => a - b);
  const pct = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.round(q * latencies.length))] : 0);
  const mean = latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : 0;
  const result = {
    requests: count,
    duration_us: Math.round(elapsedNs / 1000),
    bytes: count * opts.size,
    errors,
    latency_us: { min: pct(0), mean, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: pct(1) },
  };
  console.log("BENCH_JSON " + JSON.stringify(result));
  console.log(`msg/s ${elapsedNs > 0 ? Math.round(count / (elapsedNs / 1e9)) : 0}`);
  process.exit(count > 0 ? 0 : 1);
}

function done() {
  open -= 1;
  if (open === 0) finish();
}

for (let i = 0; i < opts.connections; i++) {
  const ws = new WebSocket(opts.url, { perMessageDeflate: false, handshakeTimeout: 5000 });
  let opened = false;
  let ended = false;
  let sentAt = 0;
  const end = () => {
    if (!ended) {
      ended = true;
      done();
    }
  };
  const send = () => {
    sentAt = Number(process.hrtime.bigint());
    ws.send(payload, (err) => {
      if (err) errors.write += 1;
    });
  };
  ws.on("open", () => {
    opened = true;
    if (started === null) {
      started = Number(process.hrtime.bigint());
      deadline = started + opts.duration * 1e9;
      setTimeout(() => {
        // Connections still out after the grace time are stuck: count them and stop.
        errors.timeout += open;
        finish();
      }, opts.duration * 1000 + 5000).unref();
    }
    send();
  });
  ws.on("message", (data, isBinary) => {
    const now = Number(process.hrtime.bigint());
    if (isBinary || data.length !== opts.size || data.toString() !== payload) {
      errors.status += 1;
      ws.terminate();
      return;
    }
    latencies.push((now - sentAt) / 1000);
    count += 1;
    if (now < deadline) send();
    else ws.close(1000);
  });
  ws.on("unexpected-response", (_req, res) => {
    errors.status += 1;
    res.resume();
    ws.terminate();
    end();
  });
  ws.on("error", () => {
    if (opened) errors.read += 1;
    else errors.connect += 1;
    end();
  });
  ws.on("close", end);
}
// A server that never answers the handshakes: give up after the handshake timeout.
setTimeout(() => {
  if (started === null) finish();
}, 10000).unref();
