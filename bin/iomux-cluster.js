#!/usr/bin/env node
'use strict';
// iomux-cluster FILE: runs a supervisor from a config file (.json or .js).
// A bad config names the field and the reason, and exits 2.
const { cluster } = require('../dist');

async function main() {
  const file = process.argv[2];
  if (!file || file === '-h' || file === '--help') {
    console.error('usage: iomux-cluster CONFIG.json|CONFIG.js');
    process.exit(file ? 0 : 2);
  }
  let loaded;
  try {
    loaded = await cluster.loadConfig(file);
  } catch (e) {
    if (e && e.code === 'ERR_IOMUX_CLUSTER_CONFIG') {
      console.error(`iomux-cluster: bad config ${file}: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  const sup = new cluster.Supervisor(loaded.options, loaded.baseDir);
  try {
    await sup.start();
  } catch (e) {
    console.error(`iomux-cluster: cannot start: ${e.message}`);
    await sup.stop().catch(() => {});
    process.exit(1);
  }
  const log = loaded.options.log || ((l) => console.error(l));
  log(`iomux-cluster: pid ${process.pid}, admin socket in ${sup.runDir}`);
  await new Promise((resolve) => sup.once('stopped', resolve));
  process.exit(0);
}

main().catch((e) => {
  console.error('iomux-cluster:', e);
  process.exit(1);
});
