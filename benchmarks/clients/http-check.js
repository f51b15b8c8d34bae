'use strict';
// HTTP load with every response checked, for benchmarks/run.js (rows
// "express" and "fastify"):
//
//   node benchmarks/clients/http-check.js <port> <seconds> <connections>
//
// autocannon (programmatic) sends GET /users/<n> for 16 values of n in turn
// on every connection; every response must be 200 with the body
// {"id":"<n>","name":"user <n>"} of its own request. Prints one JSON line:
// autocannon's result, plus `checked` (responses compared) and `mismatches`.

const autocannon = require('autocannon');

const port = Number(process.argv[2]);
const seconds = Number(process.argv[3]);
const connections = Number(process.argv[4]);
if (!Number.isInteger(port) || !(seconds > 0) || !Number.isInteger(connections) || connections < 1) {
  process.stderr.write('usage: node http-check.js <port> <seconds> <connections>\n');
  process.exit(2);
}

// Sixteen requests, each with the response it must get; autocannon sends them
// in turn on every connection (prebuilt, so the client stays cheap).
const IDS = Array.from({ length: 16 }, (_, i) => String(1000 + i * 37));
let checked = 0;
let mismatches = 0;
let firstMismatch = null;

const instance = autocannon({
  url: `http://127.0.0.1:${port}`,
  connections,
  duration: seconds,
  pipelining: 1,
  requests: IDS.map((id) => {
    const want = `{"id":"${id}","name":"user ${id}"}`;
    return {
      method: 'GET',
      path: `/users/${id}`,
      onResponse: (status, body) => {
        checked++;
        if (status !== 200 || body !== want) {
          mismatches++;
          if (firstMismatch === null) firstMismatch = { status, body: String(body).slice(0, 200), want };
        }
      },
    };
  }),
}, (err, result) => {
  if (err) {
    process.stderr.write(`http-check: ${err.stack || err}\n`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify({ ...result, checked, mismatches, firstMismatch }) + '\n');
});
instance.on('error', (err) => {
  process.stderr.write(`http-check: ${err.stack || err}\n`);
});
