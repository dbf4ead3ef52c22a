// schema.js: load event/event.schema.json the way a Node publisher should,
// and judge the event corpus (event/testdata/corpus) with it.
//
//   node schema.js      prints a JSON summary: the versions, whether the
//                       schema compiled in strict mode, and per corpus case
//                       the expected and the actual verdict
//
// The schema is JSON Schema draft 2020-12: plain require("ajv") is draft-07
// and cannot load it; ajv/dist/2020 can. ajv-formats adds the "date-time"
// format (ajv alone refuses unknown formats in strict mode). strict: true
// makes ajv refuse a schema with unknown keywords, or a "required" property
// it cannot see, instead of silently ignoring them.
//
// MAILRELAY_SCHEMA and MAILRELAY_CORPUS override the paths (the e2e test
// runs a copy of this directory).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const Ajv2020 = require("ajv/dist/2020");
const addFormats = require("ajv-formats");

const SCHEMA = process.env.MAILRELAY_SCHEMA || path.join(__dirname, "..", "..", "event", "event.schema.json");
const CORPUS = process.env.MAILRELAY_CORPUS || path.join(__dirname, "..", "..", "event", "testdata", "corpus");

// compileSchema returns the validate function; it throws when the schema
// does not compile in strict mode.
function compileSchema(file = SCHEMA) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  return ajv.compile(JSON.parse(fs.readFileSync(file, "utf8")));
}

// loadCorpus reads the cases as event/testdata/corpus/README.md describes
// them: valid/NAME.json must be accepted; invalid/NAME.json must be refused,
// and invalid/NAME.problems.json says what the relay reports and whether a
// schema can tell at all ("schema": false, e.g. a key given twice, which
// every JSON parser collapses before a validator sees it).
function loadCorpus(dir = CORPUS) {
  const cases = [];
  for (const kind of ["valid", "invalid"]) {
    const files = fs.readdirSync(path.join(dir, kind))
      .filter((f) => f.endsWith(".json") && !f.endsWith(".problems.json"))
      .sort();
    for (const f of files) {
      const file = path.join(dir, kind, f);
      const name = `${kind}/${f.slice(0, -".json".length)}`;
      let schema = true;
      if (kind === "invalid") {
        const meta = JSON.parse(fs.readFileSync(file.slice(0, -".json".length) + ".problems.json", "utf8"));
        schema = meta.schema !== false;
      }
      cases.push({ name, file, expectValid: kind === "valid", schema });
    }
  }
  return cases;
}

// judge validates one case; a file that is not JSON is refused.
function judge(validate, c) {
  let instance;
  try {
    instance = JSON.parse(fs.readFileSync(c.file, "utf8"));
  } catch (err) {
    return { valid: false, errors: [`not JSON: ${err.message}`] };
  }
  const valid = validate(instance);
  const errors = valid ? [] : validate.errors.map((e) => `${e.instancePath || "/"} ${e.keyword}: ${e.message}`);
  return { valid, errors };
}

// summary judges every case. A case with "schema": false is judged too, for
// information; only the others must match.
function summary() {
  const out = {
    ajv: require("ajv/package.json").version,
    ajvFormats: require("ajv-formats/package.json").version,
    schema: SCHEMA,
    corpus: CORPUS,
    strict: true,
    compiled: false,
    compileError: null,
    cases: {},
    mismatches: [],
  };
  let validate;
  try {
    validate = compileSchema();
    out.compiled = true;
  } catch (err) {
    out.compileError = err.message;
    return out;
  }
  for (const c of loadCorpus()) {
    const v = judge(validate, c);
    out.cases[c.name] = { expectValid: c.expectValid, schema: c.schema, ...v };
    if (c.schema && v.valid !== c.expectValid) out.mismatches.push(c.name);
  }
  return out;
}

module.exports = { SCHEMA, CORPUS, compileSchema, loadCorpus, judge, summary };

if (require.main === module) {
  const s = summary();
  console.log(JSON.stringify(s, null, 1));
  if (!s.compiled || s.mismatches.length > 0) process.exitCode = 1;
}
