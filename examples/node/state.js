#!/usr/bin/env node
// state.js: print what became of a notification, from the KV bucket
// notify_email_state (the relay's ledger).
//
//   node state.js <notification-id>
//   {"state":"sent","type":"task.comment","recipient":"42","attempts":1,...}
//
// The key is the notification id as a string (the integer 12345 is "12345").
// Exit code 2 means there is no record (yet): the relay has not handled the
// notification, or the record expired (MAILRELAY_STATE_TTL, 30 days).
// A message that could not be read as an event at all is recorded under
// "seq.<stream sequence>" instead.
"use strict";

const { connectFromEnv, fail } = require("./connect");

async function main() {
  const id = process.argv[2];
  if (!id) return fail("usage: node state.js <notification-id>");

  const { nc, js } = await connectFromEnv("mailrelay-example-state");
  try {
    const kv = await js.views.kv("notify_email_state", { bindOnly: true });
    const entry = await kv.get(id);
    if (!entry || entry.operation !== "PUT") {
      console.error(`no record for ${id} (yet)`);
      process.exitCode = 2;
      return;
    }
    // The value as the relay wrote it: state, type, recipient, attempts,
    // error, message_id, updated_at (see docs/contract.md §4).
    console.log(entry.string());
  } finally {
    await nc.close();
  }
}

main().catch((err) => fail(`state: ${err.message}`));
