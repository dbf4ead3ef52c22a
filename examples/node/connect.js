// connect.js: the one place that turns the environment into a NATS
// connection, shared by publish.js, prefs.js and state.js.
//
//   NATS_URL        default nats://127.0.0.1:4222
//   NATS_USER       with NATS_PASSWORD, when the server asks for a password
//                   (the shipped nats.conf has one user per role: publish.js
//                   runs as notify-publisher or notify-webapp, prefs.js and
//                   state.js as notify-webapp)
//   NATS_INBOX_PREFIX  where replies come back; notify-webapp must use its
//                   own, _INBOX_notify_webapp (nats.conf says why)
"use strict";

const { connect } = require("nats");

async function connectFromEnv(name) {
  const nc = await connect({
    servers: process.env.NATS_URL || "nats://127.0.0.1:4222",
    user: process.env.NATS_USER || undefined,
    pass: process.env.NATS_PASSWORD || undefined,
    inboxPrefix: process.env.NATS_INBOX_PREFIX || undefined,
    name, // shows up in the server's connection list
  });
  // checkAPI: false skips the $JS.API.INFO request the client would make
  // first: a publisher's account may not be allowed to send it, and
  // publishing or reading a bucket does not need it.
  return { nc, js: nc.jetstream({ checkAPI: false }) };
}

// fail prints one line and sets a non-zero exit code; the scripts call it
// instead of letting Node print a stack trace at a newcomer.
function fail(message) {
  console.error(message);
  process.exitCode = 1;
}

module.exports = { connectFromEnv, fail };
