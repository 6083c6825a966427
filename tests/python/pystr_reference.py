"""Python's own answers for the text nodes' string and `re` cases: reads a JSON list of
[operation, args...] on stdin, prints the results (null for an error or no value) as JSON.
The regex operations follow ComfyUI's nodes_string.py: findall keeping each tuple's first
group, `group(i)` when the pattern has that many groups."""
import json
import re
import sys


def flags(f):
    return (re.IGNORECASE if f[0] else 0) | (re.MULTILINE if f[1] else 0) | (re.DOTALL if f[2] else 0)


def run(op, *a):
    if op == "slice":
        return a[0][a[1]:a[2]]
    if op == "capitalize":
        return a[0].capitalize()
    if op == "title":
        return a[0].title()
    if op == "strip":
        s, left, right = a
        return s.strip() if left and right else s.lstrip() if left else s.rstrip()
    if op == "find_all":
        m = re.findall(a[0], a[1], flags(a[2]))
        return [x[0] if isinstance(x, tuple) else x for x in m]
    if op == "first_group":
        m = re.search(a[0], a[1], flags(a[3]))
        return m.group(a[2]) if m and len(m.groups()) >= a[2] else None
    if op == "all_groups":
        return [m.group(a[2]) for m in re.finditer(a[0], a[1], flags(a[3]))
                if m.groups() and len(m.groups()) >= a[2]]
    if op == "sub":
        return re.sub(a[0], a[1], a[2], count=a[3], flags=flags(a[4]))
    raise ValueError(op)


out = []
for case in json.load(sys.stdin):
    try:
        out.append(run(*case))
    except (re.error, IndexError):
        out.append(None)
print(json.dumps(out))
