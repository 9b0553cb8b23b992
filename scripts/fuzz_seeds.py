"""Seeds the fuzz corpora from crates/label/data/examples.jsonl (run by scripts/fuzz)."""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"
here = os.path.dirname(os.path.abspath(__file__))
examples = os.path.join(here, "..", "crates", "label", "data", "examples.jsonl")
markings, documents = [], []
with open(examples, encoding="utf-8") as f:
    for line in f:
        if not line.strip():
            continue
        case = json.loads(line)
        for key in ("input", "expected", "expected_banner", "context_banner"):
            if isinstance(case.get(key), str):
                markings.append(case[key])
        markings.extend(case.get("portions", []))
        if case.get("portions"):
            documents.append("\n".join(case["portions"]))
documents.append("SECRET//NOFORN\n\n(S//NF) text\n(U) more\nТOP ЅECRET／／SI／／NF inline\n")
for target, items in (("parse_marking", markings), ("scan_text", markings + documents), ("rollup", documents)):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for i, item in enumerate(items):
        with open(os.path.join(d, f"seed-{i:03}"), "w", encoding="utf-8") as out:
            out.write(item)
