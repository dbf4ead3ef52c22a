#!/usr/bin/env node
// publish.js: publish one notification to mailrelay and wait for the
// JetStream acknowledgement.
//
//   node publish.js [--id ID] [--user ID] [--email ADDRESS] [--ids int|string]
//
// One message is one notification for one recipient: an action that notifies
// three people publishes three messages. The subject is notify.<type> and the
// header Nats-Msg-Id is the notification id, so a publish that is repeated
// (a retry after a timeout, a re-run job) is stored once and mailed once.
//
// Why js.publish and not nc.publish: a core NATS publish is fire-and-forget.
// If no stream stores notify.> yet (no relay has run, nor `mailrelay
// provision`), the message is gone without an error. js.publish waits until
// the stream NOTIFY has stored it, or fails loudly.
//
// Ids: every id may be a string ("n-42") or a JSON integer, as a Django
// primary key is; --ids int (the default) shows integers, --ids string
// strings (ID_KIND=int|string in the environment works too).
"use strict";

const { parseArgs } = require("node:util");
const { connectFromEnv, fail } = require("./connect");

const { values: opt } = parseArgs({
  options: {
    id: { type: "string" }, // default: a new one
    user: { type: "string" }, // the recipient's user id, the key in notify_prefs
    email: { type: "string", default: "ann@example.com" },
    ids: { type: "string", default: process.env.ID_KIND || "int" },
  },
});
if (opt.ids !== "int" && opt.ids !== "string") {
  fail(`--ids: "${opt.ids}" is neither int nor string`);
  process.exit();
}
const int = opt.ids === "int";
// id gives an object's id in the chosen form: 42 or "u42".
const id = (n, prefix) => (int ? n : `${prefix}${n}`);
// given turns a command-line id into the chosen form.
function given(name, s) {
  if (!int) return s;
  const n = Number(s);
  if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(n)) {
    fail(`--${name}: "${s}" is not an integer from 0 to 2^53-1 (use --ids string for text ids)`);
    process.exit();
  }
  return n;
}

// In a real app: the id of the in-app notification row.
const notificationId = opt.id !== undefined ? given("id", opt.id) : id(Date.now(), "n-");

// The event: docs/contract.md §3, checked by event/event.schema.json.
const event = {
  id: notificationId,
  type: "task.comment", // must equal the subject after "notify."
  occurred_at: new Date().toISOString(), // RFC 3339 in UTC: 2026-12-05T09:30:00.123Z
  workspace: { id: id(1, "w"), name: "Acme Build" }, // optional
  recipient: {
    id: opt.user !== undefined ? given("user", opt.user) : id(42, "u"),
    email: opt.email, // missing, empty or null: recorded skipped_no_email
    name: "Ann Lee", // optional
  },
  actor: { id: id(7, "u"), name: "Bob Stone" }, // optional
  task: { id: id(1001, "t-"), title: "Pour foundation", project: "HQ" },
  comment: { id: id(9, "c"), body: "Concrete truck is late, see https://example.com/deliveries/4711" },
};

async function main() {
  const { nc, js } = await connectFromEnv("mailrelay-example-publish");
  try {
    const ack = await js.publish(
      `notify.${event.type}`,
      JSON.stringify(event), // UTF-8 JSON, at most 64 KiB
      { msgID: String(event.id) }, // header Nats-Msg-Id: the same id, as a string
    );
    // duplicate: true means JetStream had this id already (within its
    // duplicate window) and did not store it again.
    console.log(JSON.stringify({ id: event.id, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate }));
  } catch (err) {
    if (err.code === "503") {
      fail("no stream stores notify.> yet (no responders): run `mailrelay provision`, or start the relay once; nothing was published");
    } else {
      fail(`publish failed: ${err.message}`);
    }
  } finally {
    await nc.close();
  }
}

main().catch((err) => fail(err.message));
