"""Constant Contact V3 OpenAPI subset used by the fake, and request validators.

The fake validates every request body against the schema of the operation in
the official spec (see README.md "Spec provenance").  The subset of the spec we
need lives, verbatim except for dropped descriptions/examples and inlined
$refs, in cc_v3_subset.json next to this file.  Regenerate it with

    /usr/bin/python3 tests/fakecc/fakecc_spec.py --extract SPEC.yaml tests/fakecc/cc_v3_subset.json

Known upstream spec defects are patched *in code* (SPEC_FIXUPS below) so the
JSON file stays a faithful extract.

Only the Python standard library plus python3-yaml (extraction only) and
python3-jsonschema are used.
"""

import copy
import datetime
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SUBSET = os.path.join(HERE, "cc_v3_subset.json")

# operationId -> (method, path relative to /v3)
OPERATIONS = {
    "createImportJSONActivity": ("POST", "/activities/contacts_json_import"),
    "getActivityById": ("GET", "/activities/{activity_id}"),
    "getAllActivities": ("GET", "/activities"),
    "createListRemoveActivity": ("POST", "/activities/remove_list_memberships"),
    "createListAddActivity": ("POST", "/activities/add_list_memberships"),
    "getList": ("GET", "/contact_lists/{list_id}"),
    "getAllLists": ("GET", "/contact_lists"),
    "createList": ("POST", "/contact_lists"),
    "getAllContacts": ("GET", "/contacts"),
    "getContactById": ("GET", "/contacts/{contact_id}"),
    "getAllCustomFields": ("GET", "/contact_custom_fields"),
    "createCustomFields": ("POST", "/contact_custom_fields"),
}
COMPONENTS = ["AccessTokenResponse", "OAuthError", "APIErrorSchema",
              "AuthorizationErrorSchema"]

_DROP_KEYS = ("description", "example", "examples", "style", "explode")


def _jsonable(x):
    if isinstance(x, (datetime.date, datetime.datetime)):
        return x.isoformat()
    if isinstance(x, bytes):
        return x.decode("latin-1")
    return x


def extract(yaml_path):
    """Extract the operations the fake serves from the full OpenAPI file."""
    import yaml  # python3-yaml; only needed for extraction
    with open(yaml_path, "rb") as f:
        raw = f.read()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(raw, Loader=loader)

    def resolve(node, stack=()):
        if isinstance(node, dict):
            if "$ref" in node:
                ref = node["$ref"]
                parts = ref.lstrip("#/").split("/")
                if ref in stack:
                    raise ValueError("recursive $ref %s" % ref)
                target = spec
                for p in parts:
                    target = target[p]
                return resolve(target, stack + (ref,))
            return {k: resolve(v, stack) for k, v in node.items()
                    if k not in _DROP_KEYS}
        if isinstance(node, list):
            return [resolve(v, stack) for v in node]
        return _jsonable(node)

    ops = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            oid = op.get("operationId")
            if oid not in OPERATIONS:
                continue
            if OPERATIONS[oid] != (method.upper(), path):
                raise ValueError("operation %s moved: %s %s" % (oid, method, path))
            entry = {"method": method.upper(), "path": path,
                     "parameters": resolve(op.get("parameters", [])),
                     "x-authorization-privileges": op.get("x-authorization-privileges"),
                     "security": op.get("security"),
                     "responses": {}}
            rb = op.get("requestBody")
            if rb:
                entry["requestBody"] = {
                    "required": rb.get("required", False),
                    "schema": resolve(rb["content"]["application/json"]["schema"]),
                }
            for code, resp in op.get("responses", {}).items():
                content = (resp or {}).get("content") or {}
                js = content.get("application/json")
                entry["responses"][str(code)] = resolve(js["schema"]) if js and "schema" in js else None
            ops[oid] = entry
    missing = set(OPERATIONS) - set(ops)
    if missing:
        raise ValueError("operations not found in spec: %s" % sorted(missing))
    comps = {n: resolve(spec["components"]["schemas"][n]) for n in COMPONENTS}
    return {
        "x-source": {
            "file": os.path.basename(yaml_path),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "info_version": str(spec.get("info", {}).get("version")),
            "info_description": str(spec.get("info", {}).get("description")),
            "servers": [s.get("url") for s in spec.get("servers", [])],
        },
        "operations": ops,
        "components": comps,
    }


def load(path=None):
    """Load the subset: a .json subset file (default) or a full .yaml spec."""
    path = path or DEFAULT_SUBSET
    if path.endswith((".yaml", ".yml")):
        return extract(path)
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Upstream defects patched at load time (documented in README.md).
# Each entry: (operationId, JSON path inside requestBody schema, key, value, why)
SPEC_FIXUPS = [
    ("createListRemoveActivity", ("properties", "source", "properties", "contact_ids"),
     "maxItems", 500, "spec says maxItems 0; description + docs say up to 500"),
    ("createListRemoveActivity", ("properties", "source", "properties", "list_ids"),
     "maxItems", 50, "spec says maxItems 0; spec description says 50 (newer docs 100) - fake uses 50"),
    ("createListRemoveActivity", ("properties", "source", "properties", "tag_ids"),
     "maxItems", 50, "spec says maxItems 0; docs say up to 50"),
    ("createListRemoveActivity", ("properties", "list_ids"),
     "maxItems", 50, "spec says maxItems 0; description says up to 50 target lists"),
    ("createListRemoveActivity", ("properties", "list_ids"),
     "minItems", 1, "an empty target list set is meaningless; fake rejects it"),
    ("createListAddActivity", ("properties", "source", "properties", "tag_ids"),
     "maxItems", 50, "spec says maxItems 0; docs say up to 50"),
    ("createListAddActivity", ("properties", "list_ids"),
     "minItems", 1, "an empty target list set is meaningless; fake rejects it"),
    ("createCustomFields", (), "required", ["label", "type"],
     "request schema has no 'required'; the response schema and docs require label and type"),
]


def apply_fixups(subset):
    subset = copy.deepcopy(subset)
    applied = []
    for oid, path, key, value, why in SPEC_FIXUPS:
        node = subset["operations"][oid]["requestBody"]["schema"]
        for p in path:
            node = node[p]
        old = node.get(key)
        node[key] = value
        applied.append({"operation": oid, "path": "/".join(path) or "/",
                        "key": key, "spec": old, "fake": value, "why": why})
    subset["x-fixups"] = applied
    return subset


# ---------------------------------------------------------------------------
# Validators


class ItemChecker:
    """Fast per-item check compiled from the spec's JSON-import item schema.

    Enforces exactly what the schema says (types and maxLength of every
    declared property, the dynamic `cf:<name>` family taking the constraints
    of the spec's literal `cf:custom_field_name` property) plus the documented
    "up to 25 custom fields per contact".  The schema declares no
    additionalProperties and no required members, so unknown keys are not
    violations; they are reported back for the statistics.
    """

    MAX_CF_PER_CONTACT = 25

    def __init__(self, item_schema):
        props = item_schema["properties"]
        self.str_max = {}
        self.int_keys = set()
        self.cf_max = None
        for k, p in props.items():
            t = p.get("type")
            if k.startswith("cf:"):
                if t != "string":
                    raise ValueError("unexpected cf: schema")
                self.cf_max = p.get("maxLength", 1 << 60)
            elif t == "string":
                self.str_max[k] = p.get("maxLength", 1 << 60)
            elif t == "integer":
                self.int_keys.add(k)
            else:
                raise ValueError("item property %s has unsupported type %r" % (k, t))
        if self.cf_max is None:
            raise ValueError("spec item schema lacks the cf: property")
        self.known = set(self.str_max) | self.int_keys

    def check(self, items, max_errors=10):
        """Return (errors, unknown_key_counts, cf_names_seen, empty_string_count)."""
        errors = []
        nerr = 0
        unknown = {}
        cf_names = set()
        empty = 0
        str_get = self.str_max.get
        int_keys = self.int_keys
        cf_max = self.cf_max
        for i, it in enumerate(items):
            if type(it) is not dict:
                nerr += 1
                if len(errors) < max_errors:
                    errors.append("import_data[%d]: must be an object" % i)
                continue
            ncf = 0
            for k, v in it.items():
                m = str_get(k)
                if m is not None:
                    if type(v) is not str:
                        nerr += 1
                        if len(errors) < max_errors:
                            errors.append("import_data[%d].%s: %s is not of type 'string'"
                                          % (i, k, json.dumps(v)[:60]))
                    elif len(v) > m:
                        nerr += 1
                        if len(errors) < max_errors:
                            errors.append("import_data[%d].%s: length %d exceeds maxLength %d"
                                          % (i, k, len(v), m))
                    elif not v:
                        empty += 1
                elif k in int_keys:
                    if type(v) is not int:
                        nerr += 1
                        if len(errors) < max_errors:
                            errors.append("import_data[%d].%s: %s is not of type 'integer'"
                                          % (i, k, json.dumps(v)[:60]))
                elif k[:3] == "cf:":
                    ncf += 1
                    cf_names.add(k[3:])
                    if type(v) is not str:
                        nerr += 1
                        if len(errors) < max_errors:
                            errors.append("import_data[%d].%s: %s is not of type 'string'"
                                          % (i, k, json.dumps(v)[:60]))
                    elif len(v) > cf_max:
                        nerr += 1
                        if len(errors) < max_errors:
                            errors.append("import_data[%d].%s: length %d exceeds maxLength %d"
                                          % (i, k, len(v), cf_max))
                    elif not v:
                        empty += 1
                else:
                    unknown[k] = unknown.get(k, 0) + 1
            if ncf > self.MAX_CF_PER_CONTACT:
                nerr += 1
                if len(errors) < max_errors:
                    errors.append("import_data[%d]: %d custom fields; at most %d per contact"
                                  % (i, ncf, self.MAX_CF_PER_CONTACT))
        if nerr > len(errors):
            errors.append("... %d validation errors in total" % nerr)
        return errors, unknown, cf_names, empty


class Validators:
    def __init__(self, subset):
        import jsonschema
        self.subset = apply_fixups(subset)
        self.ops = self.subset["operations"]
        fc = jsonschema.FormatChecker(formats=["uuid"])
        V = jsonschema.Draft4Validator
        self._body = {}
        for oid, op in self.ops.items():
            rb = op.get("requestBody")
            if not rb:
                continue
            schema = copy.deepcopy(rb["schema"])
            if oid == "createImportJSONActivity":
                # Envelope only; items are checked by ItemChecker (fast path).
                self.item_checker = ItemChecker(schema["properties"]["import_data"]["items"])
                schema["properties"]["import_data"] = {
                    k: v for k, v in schema["properties"]["import_data"].items() if k != "items"}
            V.check_schema(schema)
            self._body[oid] = V(schema, format_checker=fc)
        self.params = {oid: {p["name"]: p for p in op.get("parameters", [])}
                       for oid, op in self.ops.items()}

    def body_errors(self, oid, body, max_errors=10):
        v = self._body[oid]
        out = []
        for e in v.iter_errors(body):
            loc = "/".join(str(p) for p in e.absolute_path) or "(body)"
            out.append("%s: %s" % (loc, e.message[:300]))
            if len(out) >= max_errors:
                break
        return out

    def query_errors(self, oid, query):
        """Validate query parameters against the spec's parameter schemas.

        `query` maps name -> last value (str).  Unknown parameters are not
        errors (they are ignored, like most HTTP APIs do)."""
        errs = []
        for name, value in query.items():
            p = self.params[oid].get(name)
            if p is None or p.get("in") != "query":
                continue
            s = p.get("schema", {})
            t = s.get("type")
            if t == "integer":
                try:
                    n = int(value)
                except ValueError:
                    errs.append("%s must be an integer" % name)
                    continue
                if "minimum" in s and n < s["minimum"]:
                    errs.append("%s must be >= %s" % (name, s["minimum"]))
                if "maximum" in s and n > s["maximum"]:
                    errs.append("%s must be <= %s" % (name, s["maximum"]))
            elif t == "boolean":
                if value not in ("true", "false"):
                    errs.append("%s must be true or false" % name)
            elif t == "string" and "enum" in s:
                vals = value.split(",") if s.get("format") == "csv" else [value]
                for v in vals:
                    if v not in s["enum"]:
                        errs.append("%s does not have a valid value: %r (allowed: %s)"
                                    % (name, v, ", ".join(s["enum"])))
        return errs

    def param_default(self, oid, name):
        return self.params[oid][name].get("schema", {}).get("default")

    def response_schema(self, oid, code):
        return self.ops[oid]["responses"].get(str(code))


def main(argv):
    if len(argv) == 4 and argv[1] == "--extract":
        sub = extract(argv[2])
        with open(argv[3] + ".tmp", "w", encoding="utf-8") as f:
            json.dump(sub, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(argv[3] + ".tmp", argv[3])
        print("wrote %s (%d operations, spec sha256 %s)"
              % (argv[3], len(sub["operations"]), sub["x-source"]["sha256"]))
        return 0
    print("usage: fakecc_spec.py --extract SPEC.yaml OUT.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
