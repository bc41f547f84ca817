#!/usr/bin/env python3
"""The METADATA filter of spec/POLICY.md §4-§5, written again on Python's json module, and a
generator of documents to compare it with Tether's filter.

    reference.py generate --seed 1 --count 10000 > corpus.jsonl
    reference.py check corpus.jsonl results.jsonl

A corpus line is {"patterns": [...], "limit": n, "doc": base64}. A result line, in the same
order, is {"dropped": reason or null, "output": base64 or null, "removed": n}. `check` exits 1
and prints the first differences when any document is handled differently.
"""

import base64
import json
import random
import sys

MAX_DEPTH = 32


class Drop(Exception):
    pass


# -- patterns ---------------------------------------------------------------------------------

def compile_pattern(text):
    steps = []
    for segment in text.split("."):
        elements = 0
        while segment.endswith("[]"):
            segment = segment[:-2]
            elements += 1
        if segment == "*":
            steps.append(("star",))
        elif segment == "**":
            steps.append(("glob",))
        else:
            steps.append(("key", segment))
        steps.extend([("elem",)] * elements)
    return steps


def matches(pattern, i, path, j, whole):
    """Whether pattern[i:] matches path[j:] (whole) or could match a path that extends it."""
    if j == len(path):
        rest = pattern[i:]
        return all(step[0] == "glob" for step in rest) if whole else len(rest) > 0
    if i == len(pattern):
        return False
    step, here = pattern[i], path[j]
    if step[0] == "glob":
        return matches(pattern, i + 1, path, j, whole) or matches(pattern, i, path, j + 1, whole)
    if step[0] == "key" and here[0] == "key" and here[1] == step[1]:
        return matches(pattern, i + 1, path, j + 1, whole)
    if step[0] == "star" and here[0] == "key":
        return matches(pattern, i + 1, path, j + 1, whole)
    if step[0] == "elem" and here[0] == "elem":
        return matches(pattern, i + 1, path, j + 1, whole)
    return False


def classify(patterns, path):
    if any(matches(p, 0, path, 0, True) for p in patterns):
        return "all"
    if any(matches(p, 0, path, 0, False) for p in patterns):
        return "partial"
    return "none"


# -- the filter -------------------------------------------------------------------------------

def parse(data, limit):
    if len(data) > limit:
        raise Drop("too-large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Drop("invalid-json")

    def pairs(items):
        keys = [key for key, _ in items]
        if len(set(keys)) != len(keys):
            raise Drop("duplicate-key")
        if any("." in key for key in keys):
            raise Drop("key-contains-dot")
        return dict(items)

    def constant(name):
        raise Drop("invalid-json")

    try:
        document = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (json.JSONDecodeError, RecursionError):
        raise Drop("invalid-json")
    if depth(document) > MAX_DEPTH:
        raise Drop("too-deep")
    if not isinstance(document, dict):
        raise Drop("not-an-object")
    check_unicode(document)
    return document


def depth(value):
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def check_unicode(value):
    """json accepts lone surrogate escapes; they are not Unicode, and the policy refuses them."""
    strings = []
    if isinstance(value, dict):
        strings.extend(value.keys())
        for item in value.values():
            check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            check_unicode(item)
    elif isinstance(value, str):
        strings.append(value)
    for text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Drop("invalid-json")


def filter_container(value, path, patterns, removed):
    if isinstance(value, dict):
        items = [(("key", key), key, item) for key, item in value.items()]
        output = {}
    else:
        items = [(("elem",), None, item) for item in value]
        output = []
    for step, key, item in items:
        here = path + [step]
        verdict = classify(patterns, here)
        if verdict == "partial" and isinstance(item, (dict, list)):
            kept = filter_container(item, here, patterns, removed)
        elif verdict == "all":
            kept = item
        else:
            removed[0] += 1
            continue
        if key is None:
            output.append(kept)
        else:
            output[key] = kept
    return output


def reference(data, pattern_texts, limit):
    """(dropped reason or None, filtered document or None, removed count)."""
    try:
        document = parse(data, limit)
    except Drop as drop:
        return str(drop), None, 0
    patterns = [compile_pattern(text) for text in pattern_texts]
    if classify(patterns, []) == "all":
        return None, document, 0
    removed = [0]
    return None, filter_container(document, [], patterns, removed), removed[0]


def canonical(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- the corpus -------------------------------------------------------------------------------

KEYS = ["name", "labels", "app", "tier", "pods", "containers", "image", "env", "status", "phase",
        "node", "ip", "token", "spec", "a", "b", "ünï", "日本", "x y", "", "k\"q", "back\\slash"]
PATTERN_KEYS = ["name", "labels", "app", "pods", "containers", "image", "status", "node", "a", "ünï"]


def escaped(key):
    """The key written with some characters as \\u escapes (matching is after unescaping)."""
    out = []
    for ch in key:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif random.random() < 0.15 and ord(ch) < 0x10000:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def scalar():
    choice = random.randrange(9)
    if choice == 0:
        return random.choice(["true", "false", "null"])
    if choice == 1:
        return str(random.randint(-10**6, 10**6))
    if choice == 2:
        return random.choice(["-0", "0.5", "1e5", "1.5E-3", "-2.25e+10", "123456789012345678901234567890"])
    if choice == 3:
        return json.dumps(random.choice(["café", "tab\tand\nnewline", "quote\"", "𝄞 clef", "a.b.c"]),
                          ensure_ascii=random.random() < 0.5)
    return json.dumps("v%d" % random.randrange(1000))


def ws():
    return random.choice(["", "", "", " ", "\n  ", "\t"])


def value(depth, max_depth):
    if depth >= max_depth or random.random() < 0.45:
        return scalar()
    if random.random() < 0.6:
        return obj(depth + 1, max_depth)
    items = [value(depth + 1, max_depth) for _ in range(random.randrange(5))]
    return "[" + ws() + ("," + ws()).join(items) + ws() + "]"


def obj(depth, max_depth, keys=None):
    count = random.randrange(7)
    names = random.sample(KEYS, count) if keys is None else keys
    members = [ws() + escaped(name) + ws() + ":" + ws() + value(depth, max_depth) for name in names]
    return "{" + ",".join(members) + ws() + "}"


def pattern():
    segments = []
    for _ in range(random.randint(1, 4)):
        r = random.random()
        segment = "*" if r < 0.15 else "**" if r < 0.25 else random.choice(PATTERN_KEYS)
        if segment != "**" and random.random() < 0.25:
            segment += "[]" * random.randint(1, 2)
        segments.append(segment)
    return ".".join(segments)


def mutate(text):
    """Damage a document the way a broken or hostile producer would."""
    kind = random.randrange(10)
    data = text.encode("utf-8")
    if kind == 0 and len(data) > 2:
        return data[: random.randrange(1, len(data))]
    if kind == 1:
        i = random.randrange(len(data) + 1)
        return data[:i] + bytes([random.randrange(256)]) + data[i:]
    if kind == 2 and data:
        i = random.randrange(len(data))
        return data[:i] + data[i + 1:]
    if kind == 3:
        return text.replace("}", ',"name":1}', 1).replace('{,', '{').encode()  # maybe a duplicate
    if kind == 4:
        return text.replace('"a"', '"a.b"', 1).encode()
    if kind == 5:
        return ('{"deep":' + "[" * 40 + "]" * 40 + "}").encode()
    if kind == 6:
        return text.replace("null", "NaN", 1).replace("0.5", "Infinity", 1).encode()
    if kind == 7:
        return text.replace("]", ",]", 1).encode()
    if kind == 8:
        return text.replace('"v', '"\\ud800v', 1).encode()
    return random.choice([b"[1,2]", b'"text"', b"42", b"", b"\xef\xbb\xbf{}", b'{"a":"\xc0\x80"}'])


def corpus(seed, count):
    """(patterns, limit, document octets), `count` times."""
    random.seed(seed)
    for _ in range(count):
        document = obj(1, random.randint(1, 6))
        if random.random() < 0.03:  # right at the depth limit, or just past it
            d = random.choice([MAX_DEPTH, MAX_DEPTH + 1])
            document = '{"a":' * (d - 1) + "{}" + "}" * (d - 1)
        data = mutate(document) if random.random() < 0.3 else document.encode("utf-8")
        patterns = [pattern() for _ in range(random.randrange(4))]
        limit = random.choice([1 << 20, 1 << 20, 64])
        yield patterns, limit, data


def generate(seed, count):
    for patterns, limit, data in corpus(seed, count):
        print(json.dumps({"patterns": patterns, "limit": limit, "doc": base64.b64encode(data).decode()}))


def check(corpus_path, results_path):
    with open(corpus_path) as corpus, open(results_path) as results:
        cases = [json.loads(line) for line in corpus]
        answers = [json.loads(line) for line in results]
    if len(cases) != len(answers):
        print("%d documents but %d results" % (len(cases), len(answers)))
        return 1
    failures, dropped = [], 0
    for index, (case, answer) in enumerate(zip(cases, answers)):
        data = base64.b64decode(case["doc"])
        reason, expected, removed = reference(data, case["patterns"], case["limit"])
        if reason is not None:
            dropped += 1
            if answer.get("dropped") is None:
                failures.append((index, case, "Python drops it (%s); Tether kept it" % reason))
            continue
        if answer.get("dropped") is not None:
            failures.append((index, case, "Tether dropped it (%s); Python keeps it" % answer.get("dropped")))
            continue
        got = json.loads(base64.b64decode(answer["output"]).decode("utf-8"))
        if canonical(got) != canonical(expected):
            failures.append((index, case, "outputs differ: Python %s, Tether %s" % (canonical(expected), canonical(got))))
        elif answer["removed"] != removed:
            failures.append((index, case, "removed %d in Python, %d in Tether" % (removed, answer["removed"])))
    for index, case, what in failures[:10]:
        print("document %d %r patterns %s: %s" % (index, base64.b64decode(case["doc"])[:200], case["patterns"], what))
    print("%d documents (%d dropped, %d filtered): %d differences" % (len(cases), dropped, len(cases) - dropped, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    if sys.argv[1] == "generate":
        arguments = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        generate(int(arguments.get("--seed", "1")), int(arguments.get("--count", "10000")))
    elif sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit("usage: reference.py generate [--seed N] [--count N] | check CORPUS RESULTS")
