#!/usr/bin/env python3
"""The import graph of one crate's modules, for issue 19's measures: how many
modules, how many (module, module it imports) pairs, and the import circles.

    scripts/import-graph.py ebpf/src [-v]

A module is a file (`a/mod.rs` is `a`, `main.rs`/`lib.rs` is `crate`; files
named `*_tests.rs` and everything after a file's first `#[cfg(test)]` are
left out: tests may import freely). An edge is a `crate::` path naming
another module (the longest module prefix of the path, `use` trees
expanded); a module naming its own parent folder is no edge. Paths through
`super::` or a bare name declared by `mod` in main.rs are not counted.
Text-based: good for counting, not a compiler.
"""
import os, re, sys
root = sys.argv[1]  # the crate's src folder
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f.endswith('_tests.rs'): continue
        rel = os.path.relpath(os.path.join(dp, f), root)[:-3]
        name = rel.replace('/mod', '').replace('/', '::')
        if name in ('main', 'lib'): name = 'crate'
        src = open(os.path.join(dp, f)).read()
        i = src.find('#[cfg(test)]')
        mods[name] = src if i < 0 else src[:i]
names = set(mods)
def expand(s, i, prefix, out):
    """Parse a use-tree at s[i:], append full paths; return end index."""
    path = prefix
    while True:
        m = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)').match(s, i)
        if m and s.startswith('::', m.end()):
            path = path + [m.group(1)]; i = m.end() + 2; continue
        if m:
            out.append(path + [m.group(1)]); return m.end()
        j = i
        while s[j].isspace(): j += 1
        if s[j] == '{':
            j += 1
            while True:
                j = expand(s, j, path, out)
                while s[j].isspace() or s[j] == ',' or s[j:j+2] == 'as' : 
                    if s[j:j+2] == 'as':
                        j = re.compile(r'as\s+[A-Za-z_][A-Za-z0-9_]*').match(s, j).end()
                    else: j += 1
                if s[j] == '}': return j + 1
        out.append(path); return j
edges = {}
for me, src in mods.items():
    found = set()
    for m in re.finditer(r'crate::', src):
        paths = []
        expand(src, m.end(), [], paths)
        for p in paths:
            best = None
            for k in range(1, len(p) + 1):
                cand = '::'.join(p[:k])
                if cand in names: best = cand
            if best and best != me and not me.startswith(best + '::') : found.add(best)
    edges[me] = found
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in mods:
    if v not in idx: sc(v)
print(f"modules: {len(mods)}  import pairs: {sum(len(e) for e in edges.values())}")
print("import circles:", len([s for s in sccs if len(s) > 1]), [sorted(s) for s in sccs if len(s) > 1])
if '-v' in sys.argv:
    for m in sorted(edges): print(' ', m, '->', ', '.join(sorted(edges[m])))
