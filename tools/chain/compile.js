#!/usr/bin/env node
// Compiles contracts/TestUSDC.sol with solc-js (standard JSON input, no downloaded compiler) and writes
// build/TestUSDC.json = {"abi": [...], "bytecode": "0x..."}. Exits non-zero on any compile error.
//
// Usage: node tools/chain/compile.js   (from anywhere; paths are relative to this file)
'use strict';

const fs = require('fs');
const path = require('path');

const here = __dirname;
const contractName = 'TestUSDC';
const sourcePath = path.join(here, 'contracts', `${contractName}.sol`);
const outDir = path.join(here, 'build');
const outPath = path.join(outDir, `${contractName}.json`);

let solc;
try {
  solc = require('solc');
} catch (err) {
  console.error(`compile.js: solc-js is not installed; run "npm ci" in ${here} (${err.message})`);
  process.exit(2);
}

const sourceKey = `${contractName}.sol`;
const input = {
  language: 'Solidity',
  sources: { [sourceKey]: { content: fs.readFileSync(sourcePath, 'utf8') } },
  settings: {
    // Paris: no PUSH0/MCOPY etc., so the bytecode runs on any EVM chain a test might point at.
    evmVersion: 'paris',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const diagnostics = output.errors || [];
for (const d of diagnostics) {
  console.error(d.formattedMessage || d.message);
}
if (diagnostics.some((d) => d.severity === 'error')) {
  console.error(`compile.js: compilation of ${sourceKey} failed`);
  process.exit(1);
}

const contract = output.contracts && output.contracts[sourceKey] && output.contracts[sourceKey][contractName];
if (!contract || !contract.evm.bytecode.object) {
  console.error(`compile.js: no bytecode for ${contractName} in the compiler output`);
  process.exit(1);
}

const artifact = {
  contractName,
  compiler: solc.version(),
  abi: contract.abi,
  bytecode: `0x${contract.evm.bytecode.object}`,
};
fs.mkdirSync(outDir, { recursive: true });
// Write to a temporary file then rename, so a concurrent reader never sees half a file.
const tmpPath = `${outPath}.${process.pid}.tmp`;
fs.writeFileSync(tmpPath, `${JSON.stringify(artifact, null, 2)}\n`);
fs.renameSync(tmpPath, outPath);
console.log(`compile.js: wrote ${path.relative(process.cwd(), outPath) || outPath} (solc ${solc.version()})`);
