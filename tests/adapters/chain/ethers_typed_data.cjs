// Known-answer helper for tests/adapters/chain/test_typed_data_ethers.py: EIP-712 with
// ethers v6 (npm, installed into .tools by scripts/test; the test sets NODE_PATH).
//
// stdin: a JSON list of jobs, each
//   {"op": "sign", "key": "0x..", "domain": {..}, "types": {Name: [..]}, "message": {..}}
//   {"op": "verify", "domain": {..}, "types": {Name: [..]}, "message": {..}, "signature": "0x.."}
// ("types" without EIP712Domain, as ethers takes them)
// stdout: a JSON list of results, in the same order:
//   sign   -> {"address", "signature", "digest", "payload"}  (payload: the eth_signTypedData_v4
//             JSON that ethers' JsonRpcSigner sends to a wallet such as MetaMask)
//   verify -> {"address", "digest"}                           (the recovered signer)
"use strict";

const { Wallet, TypedDataEncoder, verifyTypedData } = require("ethers");

async function run(job) {
  const { domain, types, message } = job;
  const digest = TypedDataEncoder.hash(domain, types, message);
  if (job.op === "sign") {
    const wallet = new Wallet(job.key);
    const signature = await wallet.signTypedData(domain, types, message);
    const payload = TypedDataEncoder.getPayload(domain, types, message);
    return { address: wallet.address, signature, digest, payload };
  }
  if (job.op === "verify") {
    return { address: verifyTypedData(domain, types, message, job.signature), digest };
  }
  throw new Error(`unknown op ${job.op}`);
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const jobs = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const results = [];
  for (const job of jobs) results.push(await run(job));
  process.stdout.write(JSON.stringify(results));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
