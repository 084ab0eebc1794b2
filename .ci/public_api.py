#!/usr/bin/env python3
"""The public API of sfstream as a sorted text snapshot, from nightly rustdoc JSON.

    python3 .ci/public_api.py            # regenerate .ci/public-api.txt (commit the change)
    python3 .ci/public_api.py --check    # CI: fail when the API differs from the snapshot

One line per public item (all features on): modules, types with their public fields and
variants, `#[non_exhaustive]`, functions and methods with their signatures, traits and their
items, the traits each type implements (Send, Sync and Unpin included; blanket impls left out)
and the types of other crates the API exposes, written with their crate's path. A change to
the snapshot in a diff is a change to the public API: make it deliberate, note it in
CHANGELOG.md. Needs a nightly toolchain (`rustup toolchain install nightly`); rustdoc's JSON
format is unstable, so a new nightly may change how a line is written, not what it lists:
regenerate and review the diff then. Uses CARGO_TARGET_DIR when set.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / ".ci" / "public-api.txt"
AUTO_TRAITS = {"Send", "Sync", "Unpin"}


def rustdoc_json():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "+nightly", "rustdoc", "--lib", "--all-features", "--quiet", "--",
         "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, check=True)
    with open(target / "doc" / "sfstream.json") as f:
        return json.load(f)


class Api:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.crates = doc["external_crates"]
        self.lines = set()

    def item(self, id_):
        return self.index.get(str(id_))

    # ---- types --------------------------------------------------------------------------
    def path_of(self, p):
        """A resolved path: local and std items by name, other crates' by full path."""
        info = self.paths.get(str(p["id"]))
        name = p.get("path") or p.get("name", "?")
        if info and info["crate_id"] != 0:
            crate = self.crates.get(str(info["crate_id"]), {}).get("name", "")
            if crate not in ("std", "core", "alloc"):
                name = "::".join(info["path"])
            else:
                name = info["path"][-1]
        elif info:
            name = info["path"][-1]
        else:
            name = name.replace("$crate::", "").split("::")[-1]
        return name + self.args(p.get("args"))

    def args(self, a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            ab = a["angle_bracketed"]
            parts = [self.generic_arg(x) for x in ab.get("args", [])]
            for c in ab.get("constraints", []):
                binding = c.get("binding", {})
                if "equality" in binding:
                    eq = binding["equality"]
                    val = self.ty(eq["type"]) if "type" in eq else str(eq.get("constant"))
                    parts.append(f"{c['name']} = {val}")
                else:
                    parts.append(f"{c['name']}: " + self.bounds(binding.get("constraint", [])))
            return "<" + ", ".join(parts) + ">" if parts else ""
        if "parenthesized" in a:
            pa = a["parenthesized"]
            out = "(" + ", ".join(self.ty(t) for t in pa["inputs"]) + ")"
            if pa.get("output"):
                out += " -> " + self.ty(pa["output"])
            return out
        return ""

    def generic_arg(self, g):
        if "lifetime" in g:
            return g["lifetime"]
        if "type" in g:
            return self.ty(g["type"])
        if "const" in g:
            return str(g["const"].get("expr", "_"))
        return "_"

    def bounds(self, bs):
        out = []
        for b in bs:
            if "trait_bound" in b:
                tb = b["trait_bound"]
                mod = {"maybe": "?", "maybe_const": "~const "}.get(tb.get("modifier"), "")
                out.append(mod + self.path_of(tb["trait"]))
            elif "outlives" in b:
                out.append(b["outlives"])
            elif "use" in b:
                out.append("use<..>")
        return " + ".join(out)

    def ty(self, t):
        if t is None:
            return "()"
        k, v = next(iter(t.items()))
        if k == "resolved_path":
            return self.path_of(v)
        if k == "generic":
            return v
        if k == "primitive":
            return v
        if k == "borrowed_ref":
            lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
            mut = "mut " if v.get("is_mutable") else ""
            return f"&{lt}{mut}{self.ty(v['type'])}"
        if k == "raw_pointer":
            return ("*mut " if v.get("is_mutable") else "*const ") + self.ty(v["type"])
        if k == "tuple":
            return "(" + ", ".join(self.ty(x) for x in v) + ")"
        if k == "slice":
            return f"[{self.ty(v)}]"
        if k == "array":
            return f"[{self.ty(v['type'])}; {v['len']}]"
        if k == "impl_trait":
            return "impl " + self.bounds(v)
        if k == "dyn_trait":
            parts = [self.path_of(tr["trait"]) for tr in v.get("traits", [])]
            if v.get("lifetime"):
                parts.append(v["lifetime"])
            return "dyn " + " + ".join(parts)
        if k == "qualified_path":
            self_ty = self.ty(v["self_type"])
            if v.get("trait"):
                return f"<{self_ty} as {self.path_of(v['trait'])}>::{v['name']}"
            return f"{self_ty}::{v['name']}"
        if k == "function_pointer":
            return "fn(" + ", ".join(self.ty(x[1]) for x in v["sig"]["inputs"]) + ")" + (
                " -> " + self.ty(v["sig"]["output"]) if v["sig"].get("output") else "")
        if k == "infer":
            return "_"
        return k

    def generics(self, g):
        params = []
        for p in g.get("params", []):
            kind = p["kind"]
            if "lifetime" in kind:
                params.append(p["name"])
            elif "type" in kind:
                if kind["type"].get("is_synthetic"):
                    continue  # an `impl Trait` argument, shown in place
                b = self.bounds(kind["type"].get("bounds", []))
                params.append(p["name"] + (f": {b}" if b else ""))
            elif "const" in kind:
                params.append(f"const {p['name']}: {self.ty(kind['const']['type'])}")
        where = []
        for w in g.get("where_predicates", []):
            if "bound_predicate" in w:
                bp = w["bound_predicate"]
                where.append(f"{self.ty(bp['type'])}: {self.bounds(bp['bounds'])}")
        out = "<" + ", ".join(params) + ">" if params else ""
        return out, (" where " + ", ".join(where) if where else "")

    def signature(self, name, f):
        gen, where = self.generics(f["generics"])
        header = f.get("header", {})
        prefix = ("const " if header.get("is_const") else "") + (
            "async " if header.get("is_async") else "") + (
            "unsafe " if header.get("is_unsafe") else "")
        ins = []
        for arg, t in f["sig"]["inputs"]:
            if arg == "self":
                shown = self.ty(t)
                if shown == "Self" or (shown.startswith("&") and shown.endswith("Self")
                                       and "<" not in shown):
                    ins.append(shown[:-4] + "self")
                else:
                    ins.append("self: " + shown)
            else:
                ins.append(f"{arg}: {self.ty(t)}")
        out = f["sig"].get("output")
        ret = f" -> {self.ty(out)}" if out else ""
        return f"{prefix}fn {name}{gen}({', '.join(ins)}){ret}{where}"

    # ---- items --------------------------------------------------------------------------
    @staticmethod
    def marks(item):
        attrs = item.get("attrs", [])
        out = ""
        if "non_exhaustive" in attrs or any(
                isinstance(a, dict) and "non_exhaustive" in str(a) for a in attrs):
            out += "#[non_exhaustive] "
        if item.get("deprecation"):
            out += "#[deprecated] "
        return out

    def add(self, line):
        self.lines.add(line)

    def walk_module(self, module_id, path, seen):
        module = self.item(module_id)
        for child in module["inner"]["module"]["items"]:
            it = self.item(child)
            if it is None or it.get("visibility") != "public":
                continue
            inner_kind = next(iter(it["inner"]))
            if inner_kind == "use":
                use = it["inner"]["use"]
                target = self.item(use["id"]) if use.get("id") is not None else None
                if use.get("is_glob"):
                    if target and "module" in target["inner"]:
                        self.walk_module(use["id"], path, seen)
                    elif target and "enum" in target["inner"]:
                        pass
                    else:
                        self.add(f"pub use {use['source']}::*  (in {path})")
                    continue
                if target is None:
                    self.add(f"pub use {path}::{use['name']} = {use['source']}")
                    continue
                self.item_at(use["id"], target, f"{path}::{use['name']}", seen)
            else:
                self.item_at(child, it, f"{path}::{it['name']}", seen)

    def item_at(self, id_, it, path, seen):
        key = (str(id_), path)
        if key in seen:
            return
        seen.add(key)
        inner_kind, inner = next(iter(it["inner"].items()))
        m = self.marks(it)
        if inner_kind == "module":
            self.add(f"{m}mod {path}")
            self.walk_module(id_, path, seen)
        elif inner_kind == "struct":
            gen, where = self.generics(inner["generics"])
            kind = inner["kind"]
            if kind == "unit":
                shape = ";"
            elif "tuple" in kind:
                fields = [self.ty(self.item(f)["inner"]["struct_field"]) if f is not None
                          else "_" for f in kind["tuple"]]
                shape = "(" + ", ".join(fields) + ")"
            else:
                plain = kind["plain"]
                for f in plain["fields"]:
                    fi = self.item(f)
                    self.add(f"{self.marks(fi)}field {path}::{fi['name']}: "
                             f"{self.ty(fi['inner']['struct_field'])}")
                shape = " {..private}" if plain.get("has_stripped_fields") else " {}"
            self.add(f"{m}struct {path}{gen}{where}{shape}")
            self.impls(path, inner["impls"])
        elif inner_kind == "enum":
            gen, where = self.generics(inner["generics"])
            self.add(f"{m}enum {path}{gen}{where}")
            for v in inner["variants"]:
                vi = self.item(v)
                vk = vi["inner"]["variant"]["kind"]
                if vk == "plain":
                    shape = ""
                elif "tuple" in vk:
                    shape = "(" + ", ".join(
                        self.ty(self.item(f)["inner"]["struct_field"]) if f is not None else "_"
                        for f in vk["tuple"]) + ")"
                else:
                    fs = [f"{self.item(f)['name']}: {self.ty(self.item(f)['inner']['struct_field'])}"
                          for f in vk["struct"]["fields"]]
                    if vk["struct"].get("has_stripped_fields"):
                        fs.append("..")
                    shape = " { " + ", ".join(fs) + " }"
                self.add(f"{self.marks(vi)}variant {path}::{vi['name']}{shape}")
            self.impls(path, inner["impls"])
        elif inner_kind == "union":
            self.add(f"{m}union {path}")
        elif inner_kind == "trait":
            gen, where = self.generics(inner["generics"])
            b = self.bounds(inner.get("bounds", []))
            flags = ("unsafe " if inner.get("is_unsafe") else "") + (
                "auto " if inner.get("is_auto") else "")
            self.add(f"{m}{flags}trait {path}{gen}{': ' + b if b else ''}{where}")
            for i in inner["items"]:
                self.assoc(path, self.item(i), in_trait=True)
        elif inner_kind == "function":
            self.add(f"{m}{self.signature(path, inner)}")
        elif inner_kind == "constant":
            self.add(f"{m}const {path}: {self.ty(inner['type'])}")
        elif inner_kind == "static":
            self.add(f"{m}static {path}: {self.ty(inner['type'])}")
        elif inner_kind == "type_alias":
            gen, _ = self.generics(inner["generics"])
            self.add(f"{m}type {path}{gen} = {self.ty(inner['type'])}")
        elif inner_kind in ("macro", "proc_macro"):
            self.add(f"{m}macro {path}")
        else:
            self.add(f"{m}{inner_kind} {path}")

    def assoc(self, owner, it, in_trait=False):
        if it is None:
            return
        if not in_trait and it.get("visibility") != "public":
            return
        kind, inner = next(iter(it["inner"].items()))
        m = self.marks(it)
        name = f"{owner}::{it['name']}"
        if kind == "function":
            provided = " {provided}" if in_trait and inner.get("has_body") else ""
            self.add(f"{m}{self.signature(name, inner)}{provided}")
        elif kind == "assoc_type":
            b = self.bounds(inner.get("bounds", []))
            t = f" = {self.ty(inner['type'])}" if inner.get("type") else ""
            self.add(f"{m}type {name}{': ' + b if b else ''}{t}")
        elif kind == "assoc_const":
            self.add(f"{m}const {name}: {self.ty(inner['type'])}")

    def impls(self, path, impl_ids):
        for i in impl_ids:
            it = self.item(i)
            if it is None:
                continue
            imp = it["inner"]["impl"]
            if imp.get("blanket_impl") is not None:
                continue
            trait = imp.get("trait")
            if trait is None:
                for a in imp["items"]:
                    self.assoc(path, self.item(a))
                continue
            name = self.path_of(trait)
            base = name.split("<")[0]
            if imp.get("is_synthetic") and base not in AUTO_TRAITS:
                continue
            gen, where = self.generics(imp["generics"])
            neg = "!" if imp.get("is_negative") else ""
            self.add(f"impl{gen} {neg}{name} for {path}{where}")


HEADER = "# rustdoc JSON format {}; regenerate with `python3 .ci/public_api.py`\n"


def snapshot():
    doc = rustdoc_json()
    api = Api(doc)
    root = str(doc["root"])
    api.add("crate sfstream")
    api.walk_module(root, "sfstream", set())
    lines = sorted(api.lines, key=by_item)
    return HEADER.format(doc["format_version"]) + "".join(line + "\n" for line in lines)


def by_item(line):
    """Sorted by the item a line is about: a type's fields, methods and impls sit together."""
    words = [w for w in line.split() if w.startswith("sfstream")]
    name = words[0].split("(")[0].split("<")[0].rstrip(":;") if words else ""
    return name, line


def main():
    text = snapshot()
    if "--check" in sys.argv:
        old = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
        if old == text:
            print(f"public API unchanged ({len(text.splitlines())} lines in {SNAPSHOT.name})")
            return 0
        if old.splitlines()[:1] != text.splitlines()[:1]:
            # Another rustdoc JSON format: lines may be written differently without any API
            # change, so this is a note, not a failure (regenerate the snapshot with it).
            print(f"public API not compared: the snapshot was made from {old.splitlines()[:1]}, "
                  f"this nightly writes {text.splitlines()[:1]}; regenerate it with "
                  "`python3 .ci/public_api.py`")
            return 0
        import difflib
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(True), text.splitlines(True),
            "public-api.txt (committed)", "public-api.txt (this tree)"))
        print("\nThe public API changed. If that is deliberate, run `python3 .ci/public_api.py`, "
              "commit .ci/public-api.txt and note the change in CHANGELOG.md.", file=sys.stderr)
        return 1
    SNAPSHOT.write_text(text)
    print(f"wrote {SNAPSHOT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
