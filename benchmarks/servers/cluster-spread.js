'use strict';
// Per-process counters for the `cluster` benchmark: accepted connections and
// requests, written to SPREAD_DIR/<pid>.json every 100 ms when SPREAD_DIR is set.
const fs = require('fs');
const path = require('path');

function countSpread() {
  const counts = { pid: process.pid, accepted: 0, requests: 0 };
  const dir = process.env.SPREAD_DIR;
  if (dir) {
    const file = path.join(dir, `${process.pid}.json`);
    // Written aside and renamed, so that a reader never sees half a file.
    const write = () => {
      try {
        fs.writeFileSync(`${file}.tmp`, JSON.stringify(counts));
        fs.renameSync(`${file}.tmp`, file);
      } catch (_) { /* the directory is gone */ }
    };
    write();
    setInterval(write, 100).unref();
  }
  return counts;
}

module.exports = { countSpread };
