// Loads a document exported by `duet export --format automerge` with the
// official JavaScript Automerge and prints what it found, as JSON.
// Usage: node load.cjs FILE (with DUET_JS_DIR naming the folder whose
// node_modules holds @automerge/automerge).
const { createRequire } = require("node:module");
const path = require("node:path");
const fs = require("node:fs");
const A = createRequire(path.join(process.env.DUET_JS_DIR, "noop.js"))("@automerge/automerge");

const doc = A.load(new Uint8Array(fs.readFileSync(process.argv[2])));
const issues = Object.entries(doc.issues).map(([id, i]) => ({
  id,
  title: i.title,
  body: i.body.toString(),
  status: i.status,
  notes: (i.notes || []).map((n) => n.text),
}));
console.log(JSON.stringify({ schema: doc.schema, space_id: doc.space_id, issues, heads: A.getHeads(doc) }));
