// schema.test.js: `npm test` (node --test). event/event.schema.json compiles
// under ajv in strict mode and gives every corpus case the corpus's verdict.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { compileSchema, loadCorpus, judge } = require("./schema");

test("the schema compiles under ajv 2020 + ajv-formats in strict mode", () => {
  assert.doesNotThrow(() => compileSchema());
});

test("every corpus case gets the corpus's verdict", async (t) => {
  const validate = compileSchema();
  const cases = loadCorpus();
  assert.ok(cases.length > 0, "the corpus is empty");
  for (const c of cases) {
    if (!c.schema) continue; // only the relay can tell (problems.json says why)
    await t.test(c.name, () => {
      const { valid, errors } = judge(validate, c);
      assert.equal(valid, c.expectValid, c.expectValid ? `refused: ${errors.join("; ")}` : "accepted an invalid event");
    });
  }
});
