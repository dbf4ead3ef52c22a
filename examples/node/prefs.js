#!/usr/bin/env node
// prefs.js: turn Email on (or off) for one user and one event type.
//
//   node prefs.js <user-id> <type> [on|off]
//   node prefs.js 42 task.comment on
//
// Email is opt-in: the relay mails nothing unless the user's entry in the KV
// bucket notify_prefs says true for that type, for example
//   {"email": {"task.comment": true, "mention": true}}
// The key is the user id as a string (the integer 42 is the key "42").
//
// The update is a compare-and-set: read the entry and its revision, change
// one type, write back only if nobody wrote in between (else read again).
// Every other type and every other field (time_zone, quiet_hours, ...) is
// kept, and a concurrent change (the unsubscribe link, the settings page) is
// never lost.
"use strict";

const { connectFromEnv, fail } = require("./connect");

const TYPES = ["task.assigned", "task.date_changed", "task.comment", "task.blocked", "mention"];
const WRONG_LAST_SEQUENCE = 10071; // JetStream's answer when the revision moved on

async function main() {
  const [user, type, onOff = "on"] = process.argv.slice(2);
  if (!user || !TYPES.includes(type) || !["on", "off"].includes(onOff)) {
    return fail(`usage: node prefs.js <user-id> <${TYPES.join("|")}> [on|off]`);
  }

  const { nc, js } = await connectFromEnv("mailrelay-example-prefs");
  try {
    // bindOnly: use the bucket the relay (or `mailrelay provision`) created;
    // never create it here with other settings.
    const kv = await js.views.kv("notify_prefs", { bindOnly: true });
    for (let attempt = 1; ; attempt++) {
      const entry = await kv.get(user); // null when the user has no preferences
      let prefs = {};
      if (entry && entry.operation === "PUT") {
        try {
          prefs = entry.json();
        } catch {
          console.error(`notify_prefs ${user}: not valid JSON, starting afresh: ${entry.string()}`);
        }
      }
      if (prefs === null || typeof prefs !== "object" || Array.isArray(prefs)) prefs = {};
      if (prefs.email === null || typeof prefs.email !== "object" || Array.isArray(prefs.email)) prefs.email = {};
      prefs.email[type] = onOff === "on"; // a boolean: "true" or 1 would mean off

      const value = JSON.stringify(prefs);
      try {
        // create() succeeds only if the key does not exist (or was deleted),
        // update() only if the entry is still at the revision we read.
        if (entry) await kv.update(user, value, entry.revision);
        else await kv.create(user, value);
        console.log(value);
        return;
      } catch (err) {
        if (err?.api_error?.err_code !== WRONG_LAST_SEQUENCE || attempt === 5) throw err;
        // Someone else wrote first: read their version and apply ours to it.
      }
    }
  } finally {
    await nc.close();
  }
}

main().catch((err) => fail(`prefs: ${err.message}`));
