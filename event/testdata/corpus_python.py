# The Python leg of event/corpus_test.go (TestCorpusPython): judges corpus
# events with the shipped schema under Python's jsonschema, the way a Django
# service would: Draft202012Validator with its FORMAT_CHECKER.
#
#   python3 corpus_python.py event.schema.json EVENT.json...
#
# prints {"version", "formats", "errors": {EVENT.json: [message, ...]}}.
import json
import sys
from importlib.metadata import version

import jsonschema

with open(sys.argv[1], encoding="utf-8") as f:
    schema = json.load(f)
V = jsonschema.Draft202012Validator
V.check_schema(schema)
checker = V.FORMAT_CHECKER
validator = V(schema, format_checker=checker)

errors = {}
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        instance = json.load(f)
    errors[path] = sorted(e.message[:200] for e in validator.iter_errors(instance))

json.dump({"version": version("jsonschema"), "formats": sorted(checker.checkers), "errors": errors}, sys.stdout)
