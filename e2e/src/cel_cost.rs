//! Static cost estimation of CRD `x-kubernetes-validations` rules, as kube-apiserver does when a
//! CustomResourceDefinition is created or updated.
//!
//! The real server refuses a CRD whose rules *could* be too expensive on the largest object a
//! request may carry, before any object exists. It prices every rule with cel-go's static
//! estimator (`checker/cost.go`): a cost per identifier, selection, call and comprehension step,
//! where a comprehension costs its range's maximum size times its step. Sizes come from the schema
//! (`maxItems`, `maxLength`, `maxProperties`) or, where none is declared, from how many of the
//! smallest possible elements fit in a 3 MiB request. Kubernetes' own library functions are priced
//! by `k8s.io/apiserver/pkg/cel/library/cost.go`. A rule under a list or map runs once per element,
//! so its cost is multiplied by the node's cardinality: the product of the `maxItems` /
//! `maxProperties` above it, or, when one of them is missing, how many of the node's smallest
//! values fit in a request. A rule over [`STATIC_ESTIMATED_COST_LIMIT`], or a schema whose rules
//! total more than [`STATIC_ESTIMATED_CRD_COST_LIMIT`], refuses the CRD.
//!
//! This module reproduces those rules (apiextensions-apiserver and cel-go of Kubernetes v1.32)
//! without a CEL type checker: the few types the estimator looks at (the kind of a selected
//! operand, which overload a call resolves to, whether a value is a list or a map) are inferred
//! from the schema and the expression here.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

/// Runtime cost limit of one rule evaluation (`celconfig.PerCallLimit`). The static check below
/// does not use it; it is here so tests can relate static estimates to the runtime budget.
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// Largest static estimate allowed for one rule, already multiplied by its cardinality
/// (`StaticEstimatedCostLimit` of apiextensions validation).
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Largest total of every rule's estimate in one schema (`StaticEstimatedCRDCostLimit`).
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
/// The largest request body the API server accepts (`celconfig.MaxRequestSizeBytes`), which
/// bounds every list, map and string without a declared maximum.
pub const MAX_REQUEST_SIZE_BYTES: i64 = 3 * 1024 * 1024;

const SELECT_AND_IDENT_COST: u64 = 1;
const CONST_COST: u64 = 0;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRUCT_CREATE_BASE_COST: u64 = 40;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// Kubernetes turns presence tests (`has()`) free (`PresenceTestHasCost(false)`).
const PRESENCE_TEST_COST: u64 = 0;
const MAX_FORMAT_SIZE: u64 = 64;
const MAX_NAME_FORMAT_REGEX_SIZE: f64 = 128.0;
const MAX_DURATION_SIZE_JSON: i64 = 32;
const MAX_DATETIME_SIZE_JSON: i64 = 32;
const JSON_DATE_SIZE: i64 = 12;
const MIN_DURATION_SIZE_JSON: i64 = 3;
const MIN_DATETIME_SIZE_JSON: i64 = 21;
const MIN_STRING_SIZE: i64 = 2;
const MIN_BOOL_SIZE: i64 = 4;
const MIN_NUMBER_SIZE: i64 = 1;

/// A `[min, max]` range of sizes or costs; arithmetic saturates at `u64::MAX` as cel-go's does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub min: u64,
    pub max: u64,
}

impl Estimate {
    pub const fn exact(v: u64) -> Self {
        Self { min: v, max: v }
    }
    const UNKNOWN_SIZE: Estimate = Estimate {
        min: 0,
        max: u64::MAX,
    };

    fn add(self, o: Self) -> Self {
        Self {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }
    fn multiply(self, o: Self) -> Self {
        Self {
            min: self.min.saturating_mul(o.min),
            max: self.max.saturating_mul(o.max),
        }
    }
    fn factor(self, f: f64) -> Self {
        Self {
            min: multiply_by_cost_factor(self.min, f),
            max: multiply_by_cost_factor(self.max, f),
        }
    }
    fn union(self, o: Self) -> Self {
        Self {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// cel-go's `multiplyByCostFactor`: the product rounded up, saturating.
fn multiply_by_cost_factor(x: u64, f: f64) -> u64 {
    let xf = x as f64;
    if xf > 0.0 && f > 0.0 && xf > u64::MAX as f64 / f {
        return u64::MAX;
    }
    let ceil = (xf * f).ceil();
    if ceil >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        ceil as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Schema -> CEL declaration types (k8s.io/apiserver/pkg/cel/common SchemaDeclType)
// ---------------------------------------------------------------------------------------------

/// The CEL view of a schema node: its type, the maximum size the estimator assumes for it and the
/// smallest size it can take in JSON (which bounds how many can fit in a request).
#[derive(Clone, Debug)]
pub struct DeclType {
    pub kind: DeclKind,
    /// Maximum length (strings, bytes) or element count (lists, maps); 0 for other kinds.
    pub max_elements: i64,
    pub min_serialized_size: i64,
}

#[derive(Clone, Debug)]
pub enum DeclKind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`.
    Dyn,
    List(Rc<DeclType>),
    /// `additionalProperties`: string keys.
    Map(Rc<DeclType>),
    /// `properties`, keyed by the CEL-escaped property name.
    Object(BTreeMap<String, Rc<DeclType>>),
}

fn simple(kind: DeclKind, min_size: i64) -> DeclType {
    DeclType {
        kind,
        max_elements: 0,
        min_serialized_size: min_size,
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn non_negative(schema: &Value, key: &str) -> Option<i64> {
    schema.get(key).and_then(Value::as_i64).map(|v| v.max(0))
}

/// The CEL identifier a property is reachable by, or `None` when it cannot be (apiserver
/// `cel.Escape`): reserved words become `__word__`; `__`, `.`, `-`, `/` are spelled out.
pub fn escape_property(name: &str) -> Option<String> {
    const RESERVED: [&str; 21] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

fn max_string_length_per_request(schema: &Value) -> i64 {
    if flag(schema, "x-kubernetes-int-or-string") {
        return MAX_REQUEST_SIZE_BYTES - 2;
    }
    match schema.get("format").and_then(Value::as_str) {
        Some("duration") => MAX_DURATION_SIZE_JSON,
        Some("date") => JSON_DATE_SIZE,
        Some("date-time") => MAX_DATETIME_SIZE_JSON,
        _ => MAX_REQUEST_SIZE_BYTES - 2,
    }
}

fn max_array_items_from_min_size(min_size: i64) -> i64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min_size + 1)
}

fn max_additional_properties_from_min_size(min_size: i64) -> i64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min_size + 6)
}

/// How many times data of `min_size` bytes can occur in one request: the cardinality of a rule
/// on a node under unbounded lists or maps.
pub fn max_cardinality(min_size: i64) -> u64 {
    (MAX_REQUEST_SIZE_BYTES / (min_size + 1)) as u64
}

/// The CEL declaration of a schema node, or `None` when CEL cannot see it (no type, or a list or
/// map of something CEL cannot see). `is_resource_root` adds `apiVersion`, `kind` and
/// `metadata.name`/`generateName`, as for the root of a resource or an embedded resource.
pub fn schema_decl_type(schema: &Value, is_resource_root: bool) -> Option<DeclType> {
    if flag(schema, "x-kubernetes-int-or-string") {
        let mut dyn_type = simple(DeclKind::Dyn, 1);
        dyn_type.max_elements = MAX_REQUEST_SIZE_BYTES - 2;
        return Some(dyn_type);
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "array" => {
            let items = schema.get("items")?;
            let item_type = schema_decl_type(items, flag(items, "x-kubernetes-embedded-resource"))?;
            let max_items = non_negative(schema, "maxItems")
                .unwrap_or_else(|| max_array_items_from_min_size(item_type.min_serialized_size));
            Some(DeclType {
                kind: DeclKind::List(Rc::new(item_type)),
                max_elements: max_items,
                min_serialized_size: 2,
            })
        }
        "object" => {
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let value_type = schema_decl_type(
                    additional,
                    flag(additional, "x-kubernetes-embedded-resource"),
                )?;
                let max_props = non_negative(schema, "maxProperties").unwrap_or_else(|| {
                    max_additional_properties_from_min_size(value_type.min_serialized_size)
                });
                return Some(DeclType {
                    kind: DeclKind::Map(Rc::new(value_type)),
                    max_elements: max_props,
                    min_serialized_size: 2,
                });
            }
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut fields = BTreeMap::new();
            let mut min_size = 2;
            let empty = serde_json::Map::new();
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for (name, prop) in props {
                if is_resource_root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(field_type) =
                    schema_decl_type(prop, flag(prop, "x-kubernetes-embedded-resource"))
                {
                    if required.contains(&name.as_str()) && prop.get("default").is_none() {
                        min_size += name.len() as i64 + field_type.min_serialized_size + 4;
                    }
                    if let Some(escaped) = escape_property(name) {
                        fields.insert(escaped, Rc::new(field_type));
                    }
                }
            }
            if is_resource_root {
                // The root of a resource always exposes these, whatever the schema says.
                let string = || Rc::new(string_type(&Value::Null));
                fields.insert("apiVersion".into(), string());
                fields.insert("kind".into(), string());
                let mut meta = BTreeMap::new();
                meta.insert("name".into(), string());
                meta.insert("generateName".into(), string());
                fields.insert(
                    "metadata".into(),
                    Rc::new(simple(DeclKind::Object(meta), 2)),
                );
            }
            Some(simple(DeclKind::Object(fields), min_size))
        }
        "string" => Some(string_type(schema)),
        "boolean" => Some(simple(DeclKind::Bool, MIN_BOOL_SIZE)),
        "number" => Some(simple(DeclKind::Double, MIN_NUMBER_SIZE)),
        "integer" => Some(simple(DeclKind::Int, MIN_NUMBER_SIZE)),
        _ => None,
    }
}

fn string_type(schema: &Value) -> DeclType {
    let max_length = non_negative(schema, "maxLength");
    match schema.get("format").and_then(Value::as_str) {
        Some("byte") => DeclType {
            kind: DeclKind::Bytes,
            max_elements: max_length.unwrap_or_else(|| max_string_length_per_request(schema)),
            min_serialized_size: MIN_STRING_SIZE,
        },
        Some("duration") => DeclType {
            kind: DeclKind::Duration,
            max_elements: max_string_length_per_request(schema),
            min_serialized_size: MIN_DURATION_SIZE_JSON,
        },
        Some("date") => DeclType {
            kind: DeclKind::Timestamp,
            max_elements: max_string_length_per_request(schema),
            min_serialized_size: JSON_DATE_SIZE,
        },
        Some("date-time") => DeclType {
            kind: DeclKind::Timestamp,
            max_elements: max_string_length_per_request(schema),
            min_serialized_size: MIN_DATETIME_SIZE_JSON,
        },
        _ => {
            let max = match max_length {
                // maxLength counts code points; a code point is up to 4 bytes.
                Some(n) => n.saturating_mul(4),
                None => match schema.get("enum").and_then(Value::as_array) {
                    Some(values) if !values.is_empty() => values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.len() as i64)
                        .max()
                        .unwrap_or(0),
                    _ => max_string_length_per_request(schema),
                },
            };
            DeclType {
                kind: DeclKind::String,
                max_elements: max,
                min_serialized_size: MIN_STRING_SIZE,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Types of expressions, as far as the estimator needs them
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Null,
    Dyn,
    Type,
    List(Rc<Ty>),
    Map(Rc<Ty>, Rc<Ty>),
    /// An object of the schema.
    Object(Rc<DeclType>),
    /// Kubernetes library types (`Quantity`, `URL`, `IP`, `CIDR`, `Format`, `Semver`, ...).
    Opaque(&'static str),
}

impl Ty {
    fn from_decl(decl: &Rc<DeclType>) -> Ty {
        match &decl.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::Dyn => Ty::Dyn,
            DeclKind::List(elem) => Ty::List(Rc::new(Ty::from_decl(elem))),
            DeclKind::Map(value) => Ty::Map(Rc::new(Ty::String), Rc::new(Ty::from_decl(value))),
            DeclKind::Object(_) => Ty::Object(decl.clone()),
        }
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }
    fn could_be_string(&self) -> bool {
        matches!(self, Ty::String | Ty::Dyn)
    }
    fn could_be_bytes(&self) -> bool {
        matches!(self, Ty::Bytes | Ty::Dyn)
    }
    fn could_be_list(&self) -> bool {
        matches!(self, Ty::List(_) | Ty::Dyn)
    }
    fn could_be_map(&self) -> bool {
        matches!(self, Ty::Map(..) | Ty::Dyn)
    }
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint
        )
    }
    /// Selecting a field of a map or a struct costs one more than of a dynamic value.
    fn select_costs(&self) -> bool {
        matches!(self, Ty::Map(..) | Ty::Object(_))
    }
    fn elem(&self) -> Ty {
        match self {
            Ty::List(e) => (**e).clone(),
            _ => Ty::Dyn,
        }
    }
    fn same(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Opaque(a), Ty::Opaque(b)) => a == b,
            (Ty::Object(a), Ty::Object(b)) => Rc::ptr_eq(a, b),
            (Ty::List(a), Ty::List(b)) => a.same(b),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => ak.same(bk) && av.same(bv),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// The cost-relevant overloads a call can resolve to (cel-go's overload ids, grouped by how the
/// estimator prices them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overload {
    Equality,
    CompareStringOrBytes,
    LogicalAndOr,
    Conditional,
    AddStringOrBytes,
    AddList,
    InList,
    Matches,
    ContainsString,
    StartsOrEndsWith,
    StringToBytes,
    BytesToString,
    IndexList,
    IndexMap,
    FormatString,
    QuoteString,
    SetsContainsOrIntersects,
    SetsEquivalent,
    CidrIp,
    CidrContainsString,
    Constant,
}

// ---------------------------------------------------------------------------------------------
// The estimator (cel-go checker/cost.go with Kubernetes' size and call estimators)
// ---------------------------------------------------------------------------------------------

struct Node {
    path: Option<Vec<String>>,
    ty: Ty,
    computed: Option<Estimate>,
    /// The value of an integer literal (`split`'s limit is read from it).
    literal_int: Option<i64>,
}

struct Coster<'a> {
    root: &'a Rc<DeclType>,
    types: HashMap<u64, Ty>,
    paths: HashMap<u64, Vec<String>>,
    iter_ranges: HashMap<String, Vec<u64>>,
    computed_sizes: HashMap<u64, Estimate>,
    literal_sizes: HashMap<u64, Estimate>,
    literal_ints: HashMap<u64, i64>,
    scopes: Vec<(String, Ty)>,
}

/// Library namespaces that are called like methods on an identifier (`sets.contains(a, b)`).
const NAMESPACES: [&str; 5] = ["sets", "strings", "cel", "math", "format"];

fn qualified_name(call: &cel::common::ast::CallExpr) -> Option<String> {
    match call.target.as_deref() {
        Some(IdedExpr {
            expr: Expr::Ident(ns),
            ..
        }) if NAMESPACES.contains(&ns.as_str()) => Some(format!("{ns}.{}", call.func_name)),
        _ => None,
    }
}

impl<'a> Coster<'a> {
    fn new(root: &'a Rc<DeclType>) -> Self {
        Self {
            root,
            types: HashMap::new(),
            paths: HashMap::new(),
            iter_ranges: HashMap::new(),
            computed_sizes: HashMap::new(),
            literal_sizes: HashMap::new(),
            literal_ints: HashMap::new(),
            scopes: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.scopes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    // --- type inference: one pass recording a type for every node -------------------------

    fn infer(&mut self, e: &IdedExpr) -> Ty {
        let ty = self.infer_inner(e);
        self.types.insert(e.id, ty.clone());
        ty
    }

    fn infer_inner(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Literal(lit) => {
                let (ty, size) = match lit {
                    LiteralValue::Boolean(_) => (Ty::Bool, 1),
                    LiteralValue::Int(i) => {
                        self.literal_ints.insert(e.id, *i.inner());
                        (Ty::Int, 1)
                    }
                    LiteralValue::UInt(_) => (Ty::Uint, 1),
                    LiteralValue::Double(_) => (Ty::Double, 1),
                    LiteralValue::Null => (Ty::Null, 1),
                    LiteralValue::String(s) => (Ty::String, s.inner().chars().count() as u64),
                    LiteralValue::Bytes(b) => (Ty::Bytes, b.inner().len() as u64),
                };
                self.literal_sizes.insert(e.id, Estimate::exact(size));
                ty
            }
            Expr::Ident(name) => match self.lookup(name) {
                Some(t) => t,
                None => match name.as_str() {
                    "self" | "oldSelf" => Ty::from_decl(self.root),
                    "int" | "uint" | "double" | "string" | "bytes" | "bool" | "list" | "map"
                    | "null_type" | "type" => Ty::Type,
                    _ => Ty::Dyn,
                },
            },
            Expr::Select(sel) => {
                let operand = self.infer(&sel.operand);
                if sel.test {
                    return Ty::Bool;
                }
                match operand {
                    Ty::Object(decl) => match &decl.kind {
                        DeclKind::Object(fields) => {
                            fields.get(&sel.field).map(Ty::from_decl).unwrap_or(Ty::Dyn)
                        }
                        _ => Ty::Dyn,
                    },
                    Ty::Map(_, v) => (*v).clone(),
                    _ => Ty::Dyn,
                }
            }
            Expr::List(list) => {
                let mut elem = None;
                for el in &list.elements {
                    let t = self.infer(el);
                    elem.get_or_insert(t);
                }
                self.literal_sizes
                    .insert(e.id, Estimate::exact(list.elements.len() as u64));
                Ty::List(Rc::new(elem.unwrap_or(Ty::Dyn)))
            }
            Expr::Map(map) => {
                let mut kv = None;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let k = self.infer(&me.key);
                        let v = self.infer(&me.value);
                        kv.get_or_insert((k, v));
                    }
                }
                self.literal_sizes
                    .insert(e.id, Estimate::exact(map.entries.len() as u64));
                let (k, v) = kv.unwrap_or((Ty::Dyn, Ty::Dyn));
                Ty::Map(Rc::new(k), Rc::new(v))
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.infer(&f.value);
                    }
                }
                Ty::Dyn
            }
            Expr::Comprehension(comp) => {
                let range = self.infer(&comp.iter_range);
                let accu = self.infer(&comp.accu_init);
                let (var1, var2) = match (&range, comp.iter_var2.is_some()) {
                    (Ty::List(el), false) => ((**el).clone(), None),
                    (Ty::List(el), true) => (Ty::Int, Some((**el).clone())),
                    (Ty::Map(k, _), false) => ((**k).clone(), None),
                    (Ty::Map(k, v), true) => ((**k).clone(), Some((**v).clone())),
                    (_, two) => (Ty::Dyn, two.then_some(Ty::Dyn)),
                };
                let depth = self.scopes.len();
                self.scopes.push((comp.accu_var.clone(), accu.clone()));
                self.scopes.push((comp.iter_var.clone(), var1));
                if let (Some(name), Some(t)) = (&comp.iter_var2, var2) {
                    self.scopes.push((name.clone(), t));
                }
                self.infer(&comp.loop_cond);
                let step = self.infer(&comp.loop_step);
                self.scopes.truncate(depth);
                // An empty list literal accumulator takes the type its step builds.
                let accu = match (&accu, &step) {
                    (Ty::List(e), Ty::List(_)) if e.is_dyn() => step,
                    _ => accu,
                };
                self.scopes.push((comp.accu_var.clone(), accu));
                let result = self.infer(&comp.result);
                self.scopes.truncate(depth);
                result
            }
            Expr::Call(call) => self.infer_call(call),
            Expr::Unspecified => Ty::Dyn,
        }
    }

    fn infer_call(&mut self, call: &cel::common::ast::CallExpr) -> Ty {
        let qualified = qualified_name(call);
        let target = match (&call.target, &qualified) {
            (Some(t), None) => Some(self.infer(t)),
            _ => None,
        };
        // cel.bind(var, init, body): `var` is bound to `init` in `body`.
        if qualified.as_deref() == Some("cel.bind") && call.args.len() == 3 {
            let init = self.infer(&call.args[1]);
            if let Expr::Ident(name) = &call.args[0].expr {
                self.scopes.push((name.clone(), init));
                let body = self.infer(&call.args[2]);
                self.scopes.pop();
                return body;
            }
        }
        let args: Vec<Ty> = call.args.iter().map(|a| self.infer(a)).collect();
        let name = qualified.as_deref().unwrap_or(call.func_name.as_str());
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Ty::Dyn);
        match name {
            "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "_&&_"
            | "_||_"
            | "!_"
            | "@in"
            | "@not_strictly_false"
            | "matches"
            | "startsWith"
            | "endsWith"
            | "contains"
            | "exists"
            | "all"
            | "isSorted"
            | "isQuantity"
            | "isIP"
            | "isCIDR"
            | "sets.contains"
            | "sets.intersects"
            | "sets.equivalent"
            | "isGreaterThan"
            | "isLessThan"
            | "isInteger"
            | "containsIP"
            | "containsCIDR"
            | "ip.isCanonical"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isGlobalUnicast"
            | "bool"
            | "isSemver"
            | "isURL" => Ty::Bool,
            "_?_:_" => match (arg(1), arg(2)) {
                (Ty::Null, other) | (other, _) => other,
            },
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" => {
                let lhs = arg(0);
                if lhs.is_dyn() { arg(1) } else { lhs }
            }
            "-_" => arg(0),
            "_[_]" => match arg(0) {
                Ty::List(e) => (*e).clone(),
                Ty::Map(_, v) => (*v).clone(),
                _ => Ty::Dyn,
            },
            "size" | "int" | "indexOf" | "lastIndexOf" | "sign" | "asInteger" | "compareTo"
            | "prefixLength" | "family" => Ty::Int,
            "uint" => Ty::Uint,
            "double" | "asApproximateFloat" => Ty::Double,
            "string"
            | "charAt"
            | "lowerAscii"
            | "upperAscii"
            | "replace"
            | "substring"
            | "trim"
            | "join"
            | "format"
            | "strings.quote"
            | "getScheme"
            | "getHostname"
            | "getHost"
            | "getPort"
            | "getEscapedPath"
            | "jsonpatch.escapeKey"
            | "reverse" => Ty::String,
            "bytes" => Ty::Bytes,
            "duration" => Ty::Duration,
            "timestamp" => Ty::Timestamp,
            "type" => Ty::Type,
            "dyn" => arg(0),
            "split" | "findAll" => Ty::List(Rc::new(Ty::String)),
            "find" => Ty::String,
            "getQuery" => Ty::Map(Rc::new(Ty::String), Rc::new(Ty::List(Rc::new(Ty::String)))),
            "sum" | "min" | "max" => target.map(|t| t.elem()).unwrap_or(Ty::Dyn),
            "quantity" | "add" | "sub" => Ty::Opaque("Quantity"),
            "url" => Ty::Opaque("URL"),
            "ip" => Ty::Opaque("IP"),
            "cidr" | "masked" => Ty::Opaque("CIDR"),
            "semver" => Ty::Opaque("Semver"),
            "format.named" => Ty::Opaque("Format"),
            "validate" => Ty::Dyn,
            _ => Ty::Dyn,
        }
    }

    // --- overload resolution ----------------------------------------------------------------

    fn overloads(&self, name: &str, target: Option<&Ty>, args: &[Ty]) -> Vec<Overload> {
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Ty::Dyn);
        let mut out = Vec::new();
        match name {
            "_==_" | "_!=_" => out.push(Overload::Equality),
            "_<_" | "_<=_" | "_>_" | "_>=_" => {
                let (a, b) = (arg(0), arg(1));
                if (a.could_be_string() && b.could_be_string())
                    || (a.could_be_bytes() && b.could_be_bytes())
                {
                    out.push(Overload::CompareStringOrBytes);
                }
                if !(matches!(a, Ty::String | Ty::Bytes) || matches!(b, Ty::String | Ty::Bytes)) {
                    out.push(Overload::Constant);
                }
            }
            "_&&_" | "_||_" => out.push(Overload::LogicalAndOr),
            "_?_:_" => out.push(Overload::Conditional),
            "_+_" => {
                let (a, b) = (arg(0), arg(1));
                if (a.could_be_string() && b.could_be_string())
                    || (a.could_be_bytes() && b.could_be_bytes())
                {
                    out.push(Overload::AddStringOrBytes);
                }
                if a.could_be_list() && b.could_be_list() {
                    out.push(Overload::AddList);
                }
                if out.is_empty() || (a.is_dyn() && b.is_dyn()) {
                    out.push(Overload::Constant);
                }
            }
            "@in" => {
                let container = arg(1);
                if container.could_be_list() {
                    out.push(Overload::InList);
                }
                if container.could_be_map() {
                    out.push(Overload::Constant);
                }
            }
            "_[_]" => {
                let container = arg(0);
                if container.could_be_list() {
                    out.push(Overload::IndexList);
                }
                if container.could_be_map() {
                    out.push(Overload::IndexMap);
                }
            }
            "matches" if target.is_some() => out.push(Overload::Matches),
            "contains" if target.is_some_and(Ty::could_be_string) => {
                out.push(Overload::ContainsString)
            }
            "startsWith" | "endsWith" => out.push(Overload::StartsOrEndsWith),
            "bytes" if arg(0).could_be_string() => out.push(Overload::StringToBytes),
            "string" if arg(0).could_be_bytes() => out.push(Overload::BytesToString),
            "format" if target.is_some_and(Ty::could_be_string) => out.push(Overload::FormatString),
            "strings.quote" => out.push(Overload::QuoteString),
            "sets.contains" | "sets.intersects" => out.push(Overload::SetsContainsOrIntersects),
            "sets.equivalent" => out.push(Overload::SetsEquivalent),
            "ip" if target.is_some() => out.push(Overload::CidrIp),
            "containsIP" | "containsCIDR" if arg(0).could_be_string() => {
                out.push(Overload::CidrContainsString)
            }
            _ => {}
        }
        if out.is_empty() {
            out.push(Overload::Constant);
        }
        out
    }

    // --- sizes ---------------------------------------------------------------------------------

    fn node(&self, e: &IdedExpr) -> Node {
        let path = self
            .paths
            .get(&e.id)
            .filter(|p| {
                !p.first()
                    .is_some_and(|v| v == "@result" || v == "__result__")
            })
            .cloned();
        let computed = self
            .computed_sizes
            .get(&e.id)
            .or_else(|| self.literal_sizes.get(&e.id))
            .copied();
        Node {
            path,
            ty: self.types.get(&e.id).cloned().unwrap_or(Ty::Dyn),
            computed,
            literal_int: self.literal_ints.get(&e.id).copied(),
        }
    }

    /// Kubernetes' size estimator: follow the path from `self` through the declarations.
    fn estimate_size(&self, node: &Node) -> Option<Estimate> {
        let path = node.path.as_ref()?;
        if path.is_empty() {
            return None;
        }
        let mut current = self.root.clone();
        for name in &path[1..] {
            let next = match (name.as_str(), &current.kind) {
                ("@items" | "@values", DeclKind::List(e) | DeclKind::Map(e)) => e.clone(),
                ("@keys", DeclKind::Map(_)) => Rc::new(string_key_type()),
                (field, DeclKind::Object(fields)) => fields.get(field)?.clone(),
                _ => return None,
            };
            current = next;
        }
        Some(Estimate {
            min: 0,
            max: current.max_elements.max(0) as u64,
        })
    }

    /// cel-go's `sizeEstimate`: computed size, else the size estimator, else 1 for scalars.
    fn size(&self, node: &Node) -> Estimate {
        if let Some(c) = node.computed {
            return c;
        }
        if let Some(s) = self.estimate_size(node) {
            return s;
        }
        if node.ty.is_scalar() {
            return Estimate::exact(1);
        }
        Estimate::UNKNOWN_SIZE
    }

    /// The Kubernetes library's size lookup, which has no scalar fallback.
    fn library_size(&self, node: &Node) -> Estimate {
        node.computed
            .or_else(|| self.estimate_size(node))
            .unwrap_or(Estimate::UNKNOWN_SIZE)
    }

    fn list_element_node(&self, list: &Node) -> Option<Node> {
        let Ty::List(elem) = &list.ty else {
            return None;
        };
        Some(Node {
            path: list.path.as_ref().map(|p| {
                let mut p = p.clone();
                p.push("@items".into());
                p
            }),
            ty: (**elem).clone(),
            computed: None,
            literal_int: None,
        })
    }

    // --- costs -----------------------------------------------------------------------------------

    fn cost(&mut self, e: &IdedExpr) -> Estimate {
        match &e.expr {
            Expr::Literal(_) => Estimate::exact(CONST_COST),
            Expr::Ident(name) => {
                let path = match self.iter_ranges.get(name).and_then(|s| s.last()).copied() {
                    Some(range) => {
                        let mut p = self.paths.get(&range).cloned().unwrap_or_default();
                        match self.types.get(&range) {
                            Some(Ty::List(_)) => {
                                p.push("@items".into());
                                Some(p)
                            }
                            Some(Ty::Map(..)) => {
                                p.push("@keys".into());
                                Some(p)
                            }
                            _ => None,
                        }
                    }
                    None => Some(vec![name.clone()]),
                };
                if let Some(p) = path {
                    self.paths.insert(e.id, p);
                }
                Estimate::exact(SELECT_AND_IDENT_COST)
            }
            Expr::Select(sel) => {
                if sel.test {
                    return Estimate::exact(PRESENCE_TEST_COST).add(self.cost(&sel.operand));
                }
                let mut sum = self.cost(&sel.operand);
                if self
                    .types
                    .get(&sel.operand.id)
                    .is_some_and(Ty::select_costs)
                {
                    sum = sum.add(Estimate::exact(SELECT_AND_IDENT_COST));
                }
                let mut p = self.paths.get(&sel.operand.id).cloned().unwrap_or_default();
                p.push(sel.field.clone());
                self.paths.insert(e.id, p);
                sum
            }
            Expr::List(list) => {
                let mut sum = Estimate::exact(0);
                for el in &list.elements {
                    sum = sum.add(self.cost(el));
                }
                sum.add(Estimate::exact(LIST_CREATE_BASE_COST))
            }
            Expr::Map(map) => {
                let mut sum = Estimate::exact(0);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        sum = sum.add(self.cost(&me.key)).add(self.cost(&me.value));
                    }
                }
                sum.add(Estimate::exact(MAP_CREATE_BASE_COST))
            }
            Expr::Struct(st) => {
                let mut sum = Estimate::exact(0);
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        sum = sum.add(self.cost(&f.value));
                    }
                }
                sum.add(Estimate::exact(STRUCT_CREATE_BASE_COST))
            }
            Expr::Comprehension(comp) => {
                let mut sum = self.cost(&comp.iter_range);
                sum = sum.add(self.cost(&comp.accu_init));
                self.iter_ranges
                    .entry(comp.iter_var.clone())
                    .or_default()
                    .push(comp.iter_range.id);
                let loop_cost = self.cost(&comp.loop_cond);
                let step_cost = self.cost(&comp.loop_step);
                if let Some(stack) = self.iter_ranges.get_mut(&comp.iter_var) {
                    stack.pop();
                }
                sum = sum.add(self.cost(&comp.result));
                let range = self.node(&comp.iter_range);
                let range_count = self.size(&range);
                self.computed_sizes.insert(e.id, range_count);
                sum.add(range_count.multiply(step_cost.add(loop_cost)))
            }
            Expr::Call(call) => self.cost_call(e.id, call),
            Expr::Unspecified => Estimate::exact(0),
        }
    }

    fn cost_call(&mut self, id: u64, call: &cel::common::ast::CallExpr) -> Estimate {
        let qualified = qualified_name(call);
        if qualified.as_deref() == Some("cel.bind") && call.args.len() == 3 {
            // cel.bind is a comprehension over an empty list: the list, the init and the body;
            // like every comprehension its size is its range's, zero.
            let cost = Estimate::exact(LIST_CREATE_BASE_COST)
                .add(self.cost(&call.args[1]))
                .add(self.cost(&call.args[2]));
            self.computed_sizes.insert(id, Estimate::exact(0));
            return cost;
        }
        let arg_costs: Vec<Estimate> = call.args.iter().map(|a| self.cost(a)).collect();
        let args: Vec<Node> = call.args.iter().map(|a| self.node(a)).collect();
        let member_target = call.target.as_deref().filter(|_| qualified.is_none());
        let mut sum = Estimate::exact(0);
        let target = match member_target {
            Some(t) => {
                sum = sum.add(self.cost(t));
                Some(self.node(t))
            }
            None => None,
        };
        let name = qualified.as_deref().unwrap_or(call.func_name.as_str());
        let arg_tys: Vec<Ty> = args.iter().map(|n| n.ty.clone()).collect();
        let overloads = self.overloads(name, target.as_ref().map(|t| &t.ty), &arg_tys);
        let mut fn_cost = Estimate {
            min: u64::MAX,
            max: 0,
        };
        let mut result_size: Option<Estimate> = None;
        for overload in &overloads {
            let (cost, size) =
                self.function_cost(name, *overload, target.as_ref(), &args, &arg_costs);
            fn_cost = fn_cost.union(cost);
            if let Some(s) = size {
                result_size = Some(result_size.map_or(s, |r| r.union(s)));
            }
            let container = call.args.first().map(|a| a.id);
            let suffix = match overload {
                Overload::IndexList => Some("@items"),
                Overload::IndexMap => Some("@values"),
                _ => None,
            };
            if let (Some(suffix), Some(container)) = (suffix, container) {
                let mut p = self.paths.get(&container).cloned().unwrap_or_default();
                p.push(suffix.into());
                self.paths.insert(id, p);
            }
        }
        if let Some(s) = result_size {
            self.computed_sizes.insert(id, s);
        }
        sum.add(fn_cost)
    }

    /// cel-go's `functionCost`: registered overload estimators, then Kubernetes' library
    /// estimator (by function name), then cel-go's own prices.
    fn function_cost(
        &self,
        name: &str,
        overload: Overload,
        target: Option<&Node>,
        args: &[Node],
        arg_costs: &[Estimate],
    ) -> (Estimate, Option<Estimate>) {
        let arg_sum = arg_costs
            .iter()
            .fold(Estimate::exact(0), |acc, c| acc.add(*c));
        let one = Estimate::exact(1);
        // ext.Sets registers its own estimators.
        if let Overload::SetsContainsOrIntersects | Overload::SetsEquivalent = overload
            && args.len() == 2
        {
            let factor = if overload == Overload::SetsEquivalent {
                2.0
            } else {
                1.0
            };
            let c = self
                .library_size(&args[0])
                .multiply(self.library_size(&args[1]))
                .factor(factor)
                .add(one);
            return (c.add(arg_sum), None);
        }
        if let Some((cost, size)) = self.library_call_cost(name, overload, target, args) {
            return (cost.add(arg_sum), size);
        }
        let size_of = |n: &Node| self.size(n);
        match overload {
            Overload::FormatString => {
                if let Some(t) = target {
                    return (
                        size_of(t).factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                        None,
                    );
                }
            }
            Overload::StringToBytes if args.len() == 1 => {
                let sz = size_of(&args[0]);
                return (
                    sz.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    Some(Estimate {
                        min: sz.min,
                        max: sz.max.saturating_mul(4),
                    }),
                );
            }
            Overload::BytesToString if args.len() == 1 => {
                let sz = size_of(&args[0]);
                return (
                    sz.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    Some(Estimate {
                        min: sz.min / 4,
                        max: sz.max,
                    }),
                );
            }
            Overload::QuoteString if args.len() == 1 => {
                let sz = size_of(&args[0]);
                return (
                    sz.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    Some(Estimate {
                        min: sz.min.saturating_add(2),
                        max: sz.max.saturating_mul(2).saturating_add(2),
                    }),
                );
            }
            Overload::StartsOrEndsWith if args.len() == 1 => {
                return (
                    size_of(&args[0])
                        .factor(STRING_TRAVERSAL_COST_FACTOR)
                        .add(arg_sum),
                    None,
                );
            }
            Overload::InList if args.len() == 2 => {
                return (size_of(&args[1]).factor(1.0).add(arg_sum), None);
            }
            Overload::Matches => {
                if let (Some(t), 1) = (target, args.len()) {
                    let str_cost = size_of(t).add(one).factor(STRING_TRAVERSAL_COST_FACTOR);
                    let regex_cost = size_of(&args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR);
                    return (str_cost.multiply(regex_cost).add(arg_sum), None);
                }
            }
            Overload::ContainsString => {
                if let (Some(t), 1) = (target, args.len()) {
                    let str_cost = size_of(t).factor(STRING_TRAVERSAL_COST_FACTOR);
                    let sub_cost = size_of(&args[0]).factor(STRING_TRAVERSAL_COST_FACTOR);
                    return (str_cost.multiply(sub_cost).add(arg_sum), None);
                }
            }
            Overload::LogicalAndOr if arg_costs.len() == 2 => {
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                return (
                    Estimate {
                        min: lhs.min,
                        max: lhs.add(rhs).max,
                    },
                    None,
                );
            }
            Overload::Conditional if args.len() == 3 => {
                let size = size_of(&args[1]).union(size_of(&args[2]));
                let cost = arg_costs[0].add(arg_costs[1].union(arg_costs[2]));
                return (cost, Some(size));
            }
            Overload::AddStringOrBytes | Overload::AddList if args.len() == 2 => {
                let result = size_of(&args[0]).add(size_of(&args[1]));
                let cost = if overload == Overload::AddList {
                    one.add(arg_sum)
                } else {
                    result.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum)
                };
                return (cost, Some(result));
            }
            Overload::CompareStringOrBytes | Overload::Equality if args.len() == 2 => {
                let (lhs, rhs) = (size_of(&args[0]), size_of(&args[1]));
                let smallest_max = lhs.max.min(rhs.max);
                let min = u64::from(smallest_max > 0);
                return (
                    Estimate {
                        min,
                        max: smallest_max,
                    }
                    .factor(STRING_TRAVERSAL_COST_FACTOR)
                    .add(arg_sum),
                    None,
                );
            }
            _ => {}
        }
        (one.add(arg_sum), None)
    }

    /// `k8s.io/apiserver/pkg/cel/library` `CostEstimator.EstimateCallCost`, keyed by function
    /// name. Returns the call's own cost (arguments are added by the caller) and result size.
    fn library_call_cost(
        &self,
        name: &str,
        overload: Overload,
        target: Option<&Node>,
        args: &[Node],
    ) -> Option<(Estimate, Option<Estimate>)> {
        let traversal = STRING_TRAVERSAL_COST_FACTOR;
        let nominal = Some((Estimate::exact(1), None));
        match name {
            "check" => Some((Estimate::exact(350_000), None)),
            "serviceAccount" | "path" | "group" | "resource" | "subresource" | "namespace"
            | "name" | "allowed" | "reason" | "error" | "errored" => nominal,
            "fieldSelector" | "labelSelector" if args.len() == 1 => {
                let len = self.library_size(&args[0]);
                let parse = len.factor(traversal);
                let requirements = len
                    .factor(0.5)
                    .factor((LIST_CREATE_BASE_COST + STRUCT_CREATE_BASE_COST) as f64);
                Some((
                    Estimate::exact(LIST_CREATE_BASE_COST)
                        .add(parse)
                        .add(requirements),
                    None,
                ))
            }
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" => {
                let t = target?;
                match self.list_element_node(t) {
                    Some(el) => {
                        let mut el_cost = Estimate::exact(1);
                        if matches!(el.ty, Ty::String | Ty::Bytes) {
                            el_cost = el_cost.add(self.library_size(&el).factor(traversal));
                        }
                        Some((self.library_size(t).multiply(el_cost), None))
                    }
                    None => Some((self.library_size(t).factor(traversal), None)),
                }
            }
            "url" | "jsonpatch.escapeKey" if args.len() == 1 => {
                let sz = self.library_size(&args[0]);
                Some((sz.factor(traversal), Some(sz)))
            }
            "lowerAscii" | "upperAscii" | "substring" | "trim" => {
                let sz = self.library_size(target?);
                Some((sz.factor(traversal), Some(sz)))
            }
            "replace" if args.len() >= 2 => {
                let sz = self.library_size(target?);
                let to_replace = self.library_size(&args[0]);
                let with = self.library_size(&args[1]);
                let mut count = Estimate::exact(0);
                let mut retained = Estimate::exact(0);
                if to_replace.min == 0 {
                    count.max = if sz.max < u64::MAX {
                        sz.max + 1
                    } else {
                        sz.max
                    };
                    retained.max = sz.max;
                } else if with.max <= to_replace.min {
                    retained.max = sz.max;
                } else {
                    count.max = (sz.max as f64 / to_replace.min as f64).ceil() as u64;
                }
                if to_replace.max == 0 {
                    count.min = if sz.min < u64::MAX {
                        sz.min + 1
                    } else {
                        sz.min
                    };
                    retained.min = sz.min;
                } else if to_replace.max <= with.min {
                    retained.min = sz.min;
                } else {
                    count.min = (sz.min as f64 / to_replace.max as f64).ceil() as u64;
                }
                let size = count.multiply(with).add(retained);
                Some((sz.factor(2.0 * traversal), Some(size)))
            }
            "split" => {
                let sz = self.library_size(target?);
                let max = match args.get(1).and_then(|a| a.literal_int) {
                    Some(n) => n as u64,
                    None => sz.max,
                };
                Some((sz.factor(2.0 * traversal), Some(Estimate { min: 0, max })))
            }
            "join" => {
                let t = target?;
                let list = self.library_size(t);
                let mut sz = match self.list_element_node(t) {
                    Some(el) => list.multiply(self.library_size(&el)),
                    None => Estimate::exact(0),
                };
                if let Some(sep) = args.first() {
                    let seps = Estimate {
                        min: list.min.saturating_sub(1),
                        max: list.max.saturating_sub(1),
                    };
                    sz = sz.add(self.library_size(sep).multiply(seps));
                }
                Some((sz.factor(traversal), Some(sz)))
            }
            "find" | "findAll" if !args.is_empty() => {
                let sz = self.library_size(target?);
                let str_cost = sz.add(Estimate::exact(1)).factor(traversal);
                let regex_cost = self
                    .library_size(&args[0])
                    .factor(REGEX_STRING_LENGTH_COST_FACTOR);
                Some((
                    str_cost.multiply(regex_cost),
                    Some(Estimate {
                        min: 0,
                        max: sz.max,
                    }),
                ))
            }
            "cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity" => {
                let sz = self.library_size(args.first()?);
                Some((sz.factor(traversal), None))
            }
            "ip" => {
                if overload == Overload::CidrIp || args.is_empty() {
                    return nominal;
                }
                Some((self.library_size(&args[0]).factor(traversal), None))
            }
            "ip.isCanonical" => {
                let sz = self.library_size(args.first()?);
                Some((sz.factor(2.0 * traversal), None))
            }
            "masked"
            | "prefixLength"
            | "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isGlobalUnicast" => nominal,
            "containsIP" | "containsCIDR" if !args.is_empty() => {
                let ip = Estimate { min: 4, max: 16 };
                let mut cost = ip.add(ip).factor(traversal);
                if name == "containsCIDR" {
                    cost = cost.add(ip.factor(traversal)).add(Estimate::exact(1));
                }
                if overload == Overload::CidrContainsString {
                    cost = cost.add(self.library_size(&args[0]).factor(traversal));
                }
                Some((cost, None))
            }
            "validate" => {
                let sz = self.library_size(args.first()?);
                Some((
                    sz.factor(traversal)
                        .factor(MAX_NAME_FORMAT_REGEX_SIZE * REGEX_STRING_LENGTH_COST_FACTOR),
                    None,
                ))
            }
            "format.named" | "sign" | "asInteger" | "isInteger" | "asApproximateFloat"
            | "isGreaterThan" | "isLessThan" | "compareTo" | "add" | "sub" | "getScheme"
            | "getHostname" | "getHost" | "getPort" | "getEscapedPath" | "getQuery" => nominal,
            "_==_" if args.len() == 2 && args[0].ty.same(&args[1].ty) => match &args[0].ty {
                Ty::Opaque("Format") => Some((
                    Estimate {
                        min: 1,
                        max: MAX_FORMAT_SIZE,
                    }
                    .factor(traversal),
                    None,
                )),
                Ty::Opaque("URL") => Some((Estimate::exact(1).factor(traversal), None)),
                Ty::Opaque(_) => nominal,
                _ => None,
            },
            _ => None,
        }
    }
}

fn string_key_type() -> DeclType {
    // Map keys are the apiserver's shared `StringType`, which carries no maximum length.
    simple(DeclKind::String, MIN_STRING_SIZE)
}

/// Parses `rule` and estimates its cost (cel-go `checker.Cost`) with `self` of type `decl`.
pub fn estimate_expression(rule: &str, decl: &Rc<DeclType>) -> Result<Estimate, String> {
    let expr = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| format!("compilation failed: {e}"))?;
    let mut coster = Coster::new(decl);
    coster.infer(&expr);
    Ok(coster.cost(&expr))
}

/// Estimates `rule` written on a node with schema `schema` (`is_resource_root` for the root of a
/// CRD schema): `(cost of one evaluation, how many times it can run if unbounded above)`.
pub fn estimate_rule(
    schema: &Value,
    is_resource_root: bool,
    rule: &str,
) -> Result<(u64, u64), String> {
    let decl = schema_decl_type(schema, is_resource_root)
        .ok_or_else(|| "unable to convert structural schema to CEL declarations".to_string())?;
    let decl = Rc::new(decl);
    let cost = estimate_expression(rule, &decl)?;
    Ok((cost.max, max_cardinality(decl.min_serialized_size)))
}

// ---------------------------------------------------------------------------------------------
// Per-CRD accounting (apiextensions validation: CELSchemaContext, TotalCost)
// ---------------------------------------------------------------------------------------------

/// The estimate of one rule or messageExpression of a CRD schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCost {
    /// API server field path, e.g.
    /// `spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`.
    pub path: String,
    /// The expression's static estimate for one evaluation.
    pub per_call: u64,
    /// How many times the rule can run: the product of `maxItems`/`maxProperties` above it, or
    /// `None` when one of them is missing (then the count derives from the request size).
    pub cardinality: Option<u64>,
    /// What counts against the limits: `per_call` times the cardinality (messageExpressions are
    /// not multiplied, as on the real server).
    pub cost: u64,
}

/// The rule costs of one `openAPIV3Schema` of a CRD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaCosts {
    /// Field path of the schema, e.g. `spec.validation.openAPIV3Schema`.
    pub path: String,
    pub rules: Vec<RuleCost>,
    /// Rules that failed to parse: `(field path, message)`.
    pub errors: Vec<(String, String)>,
    /// Sum of every rule's `cost` (saturating).
    pub total: u64,
}

/// The schemas a CRD carries with the field path the API server reports them under: one
/// `spec.validation.openAPIV3Schema` when every version has the same schema (the internal form
/// the API server validates), else one per version.
pub fn crd_schemas(crd: &Value) -> Vec<(String, &Value)> {
    let versions: Vec<&Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let schemas: Vec<Option<&Value>> = versions
        .iter()
        .map(|v| v.pointer("/schema/openAPIV3Schema"))
        .collect();
    if let Some(Some(first)) = schemas.first()
        && schemas.iter().all(|s| *s == Some(*first))
    {
        return vec![("spec.validation.openAPIV3Schema".to_string(), *first)];
    }
    schemas
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (format!("spec.versions[{i}].schema.openAPIV3Schema"), s)))
        .collect()
}

/// Estimates every rule of every schema of a CRD, as the API server does on create and update.
pub fn crd_costs(crd: &Value) -> Vec<SchemaCosts> {
    crd_schemas(crd)
        .into_iter()
        .map(|(path, schema)| schema_costs(&path, schema))
        .collect()
}

/// Estimates every rule of one `openAPIV3Schema` reported under `path`.
pub fn schema_costs(path: &str, schema: &Value) -> SchemaCosts {
    let mut out = SchemaCosts {
        path: path.to_string(),
        ..Default::default()
    };
    walk_costs(schema, path, true, Some(1), &mut out);
    out
}

fn walk_costs(
    schema: &Value,
    path: &str,
    is_root: bool,
    cardinality: Option<u64>,
    out: &mut SchemaCosts,
) {
    // How this node multiplies the count of its children (`extractMaxElements`).
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let child_factor = match ty {
        "object" if schema.get("additionalProperties").is_some() => {
            non_negative(schema, "maxProperties").map(|v| v as u64)
        }
        "array" => non_negative(schema, "maxItems").map(|v| v as u64),
        _ => Some(1),
    };
    let child_cardinality = match (cardinality, child_factor) {
        (Some(c), Some(f)) => Some(if c == 0 { 0 } else { c.saturating_mul(f) }),
        _ => None,
    };
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk_costs(
            additional,
            &format!("{path}.additionalProperties"),
            false,
            child_cardinality,
            out,
        );
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            walk_costs(
                prop,
                &format!("{path}.properties[{name}]"),
                false,
                child_cardinality,
                out,
            );
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        walk_costs(
            items,
            &format!("{path}.items"),
            false,
            child_cardinality,
            out,
        );
    }
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    else {
        return;
    };
    let is_resource_root = is_root || flag(schema, "x-kubernetes-embedded-resource");
    let Some(decl) = schema_decl_type(schema, is_resource_root) else {
        return;
    };
    let decl = Rc::new(decl);
    let rule_cardinality = max_cardinality(decl.min_serialized_size);
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{path}.x-kubernetes-validations[{i}]");
        let Some(expr) = rule
            .get("rule")
            .and_then(Value::as_str)
            .filter(|r| !r.trim().is_empty())
        else {
            continue;
        };
        match estimate_expression(expr, &decl) {
            Ok(est) => {
                let per_call = est.max;
                let cost =
                    multiply_with_overflow_guard(per_call, cardinality.unwrap_or(rule_cardinality));
                out.observe(RuleCost {
                    path: format!("{rule_path}.rule"),
                    per_call,
                    cardinality,
                    cost,
                });
            }
            Err(msg) => {
                out.errors.push((format!("{rule_path}.rule"), msg));
                continue;
            }
        }
        if let Some(message_expr) = rule
            .get("messageExpression")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            && let Ok(est) = estimate_expression(message_expr, &decl)
        {
            out.observe(RuleCost {
                path: format!("{rule_path}.messageExpression"),
                per_call: est.max,
                cardinality,
                cost: est.max,
            });
        }
    }
}

fn multiply_with_overflow_guard(base: u64, cardinality: u64) -> u64 {
    if base == 0 {
        0
    } else {
        base.saturating_mul(cardinality)
    }
}

impl SchemaCosts {
    fn observe(&mut self, rule: RuleCost) {
        self.total = self.total.saturating_add(rule.cost);
        self.rules.push(rule);
    }

    /// The API server's errors for these costs: one per rule or messageExpression over the
    /// per-expression limit and, when the total is over the CRD limit, one per top contributor
    /// (at most four, each at least 1% of the limit) and one for the schema.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for rule in &self.rules {
            if rule.cost > STATIC_ESTIMATED_COST_LIMIT {
                let name = if rule.path.ends_with(".messageExpression") {
                    "estimated messageExpression cost"
                } else {
                    "estimated rule cost"
                };
                errs.push((
                    rule.path.clone(),
                    format!(
                        "Forbidden: {}",
                        cost_error_message(name, rule.cost, STATIC_ESTIMATED_COST_LIMIT)
                    ),
                ));
            }
        }
        if self.total > STATIC_ESTIMATED_CRD_COST_LIMIT {
            for rule in self.most_expensive() {
                errs.push((
                    rule.path.clone(),
                    "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
                ));
            }
            errs.push((
                self.path.clone(),
                format!(
                    "Forbidden: {}",
                    cost_error_message(
                        "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                        self.total,
                        STATIC_ESTIMATED_CRD_COST_LIMIT
                    )
                ),
            ));
        }
        errs
    }

    /// The (at most four) costliest expressions of at least 1% of the CRD limit, costliest first.
    pub fn most_expensive(&self) -> Vec<&RuleCost> {
        let mut top: Vec<&RuleCost> = self
            .rules
            .iter()
            .filter(|r| r.cost >= STATIC_ESTIMATED_CRD_COST_LIMIT / 100)
            .collect();
        top.sort_by_key(|r| std::cmp::Reverse(r.cost));
        top.truncate(4);
        top
    }
}

/// `getCostErrorMessage` of apiextensions validation, with Go's `%f` / `%.1f` formatting.
pub fn cost_error_message(cost_name: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{cost_name} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

#[cfg(test)]
mod tests {
    //! Expected costs are derived by hand from cel-go v0.22 `checker/cost.go` (the rules the
    //! Kubernetes v1.32 API server runs): identifiers and selections on objects cost 1 each,
    //! literals 0, `has()` 0 plus its operand, `&&`/`||`/`?:` only their operands, any other call
    //! 1 plus its operands, string equality ceil(0.1 x the shorter maximum length), and a
    //! comprehension its range, init and result plus `range size x (condition + step)`.
    use super::*;
    use serde_json::json;

    fn cost(schema: Value, rule: &str) -> u64 {
        estimate_rule(&schema, false, rule)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
            .0
    }

    fn rollout_without_strategy_default() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rollout-strategy-default.yaml"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let mut crd: Value = serde_yaml::from_str(&text).expect("yaml");
        let strategy = crd
            .pointer_mut(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/strategy",
            )
            .and_then(Value::as_object_mut)
            .expect("strategy schema");
        assert!(
            strategy.remove("default").is_some(),
            "fixture has the default"
        );
        crd
    }

    /// The real v1.32 API server refused `crds/rollout.yaml` (without the strategy default) with
    /// "estimated rule cost exceeds budget by factor of 1.468..." for the canary setWeight rule.
    ///
    /// `!has(self.steps) || self.steps.all(s, !has(s.setWeight) || s.setWeight <= (has(self.trafficRouting) && has(self.trafficRouting.maxTrafficWeight) ? self.trafficRouting.maxTrafficWeight : 100))`
    /// - `steps` items are objects with no required field: 2 bytes minimum, so
    ///   (3 MiB - 2) / (2 + 1) = 1,048,575 items.
    /// - per item: condition `@not_strictly_false(accu)` = 2; step `accu && pred` = 1 + pred;
    ///   pred = `!has(s.setWeight)` (1 + 0 + 1 = 2) `||` `s.setWeight <= (...)`
    ///   (1 + 2 + conditional (cond: 1 + 2, branches max(3, 0)) = 9) = 11; so 2 + 12 = 14.
    /// - all(): `self.steps` 2 + init 0 + result 1 + 1,048,575 x 14 = 14,680,053.
    /// - `!has(self.steps)` = 2, `||` sums: 14,680,055; the canary node is under objects only,
    ///   so its cardinality is 1: 14,680,055 / 10,000,000 = 1.4680055.
    #[test]
    fn calibration_rollout_canary_rule_exceeds_budget_by_1_468() {
        let costs = crd_costs(&rollout_without_strategy_default());
        assert_eq!(costs.len(), 1);
        let schema = &costs[0];
        assert_eq!(schema.path, "spec.validation.openAPIV3Schema");
        let path = "spec.validation.openAPIV3Schema.properties[spec].properties[strategy].properties[canary].x-kubernetes-validations[2].rule";
        let rule = schema
            .rules
            .iter()
            .find(|r| r.path == path)
            .expect("canary setWeight rule");
        assert_eq!(rule.per_call, 14_680_055);
        assert_eq!(rule.cardinality, Some(1));
        assert_eq!(rule.cost, 14_680_055);
        let errors = schema.errors();
        let over: Vec<_> = errors.iter().filter(|(f, _)| f == path).collect();
        assert_eq!(
            over,
            vec![&(
                path.to_string(),
                "Forbidden: estimated rule cost exceeds budget by factor of 1.468006x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)".to_string()
            )]
        );
    }

    #[test]
    fn bounding_the_steps_list_brings_the_canary_rule_under_budget() {
        let mut crd = rollout_without_strategy_default();
        crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/strategy/properties/canary/properties/steps")
            .and_then(Value::as_object_mut)
            .expect("steps")
            .insert("maxItems".into(), json!(100));
        let costs = crd_costs(&crd);
        let rule = costs[0]
            .rules
            .iter()
            .find(|r| {
                r.path
                    .ends_with("properties[canary].x-kubernetes-validations[2].rule")
            })
            .expect("rule");
        // 2 + 0 + 1 + 100 x 14, then 2 for !has(self.steps).
        assert_eq!(rule.cost, 1_405);
    }

    /// `startsWith` costs ceil(0.1 x the prefix length) = 1 for a one-character literal, plus
    /// 1 + 1 for `self.name` (identifier, selection on an object).
    #[test]
    fn starts_with_costs_the_prefix_length() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
        assert_eq!(cost(schema, "self.name.startsWith('a')"), 3);
    }

    /// String equality costs ceil(0.1 x the smaller maximum length): unbounded strings are
    /// 3 MiB - 2 = 3,145,726 bytes (314,573), `maxLength: 10` is 40 bytes (4 code points of up
    /// to 4 bytes each... 10 x 4); each side costs 2.
    #[test]
    fn string_equality_costs_the_shorter_maximum_length() {
        let unbounded = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "string"}}});
        assert_eq!(cost(unbounded, "self.a == self.b"), 314_573 + 4);
        let bounded = json!({"type": "object", "properties": {
            "a": {"type": "string", "maxLength": 10}, "b": {"type": "string"}}});
        assert_eq!(cost(bounded, "self.a == self.b"), 4 + 4);
    }

    /// exists() over 5 strings of at most 40 bytes: condition `@not_strictly_false(!accu)` = 3,
    /// step `accu || i == 'x'` = 1 + (ceil(0.1 x min(40, 1)) + 1) = 3, so 5 x 6 = 30, plus the
    /// range `self.items` (2) and the result (1).
    #[test]
    fn exists_multiplies_its_step_by_max_items() {
        let schema = json!({"type": "object", "properties": {"items": {
            "type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 10}}}});
        assert_eq!(cost(schema, "self.items.exists(i, i == 'x')"), 33);
    }

    /// matches(): ceil(0.1 x (size + 1)) x ceil(0.25 x regex length): maxLength 63 is 252 bytes,
    /// so ceil(25.3) = 26, the 8-character regex ceil(2.0) = 2: 52, plus 2 for `self.name`.
    #[test]
    fn matches_multiplies_string_and_regex_lengths() {
        let schema =
            json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}});
        assert_eq!(cost(schema, "self.name.matches('^[a-z]+$')"), 54);
    }

    /// Kubernetes makes presence tests free: `has(self.a)` is only its operand, `self` (1).
    #[test]
    fn has_costs_only_its_operand() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(cost(schema, "has(self.a)"), 1);
    }

    /// A rule on the items of an unbounded list runs once per item that fits in a request: the
    /// item `{"x":0}` is at least 2 + len("x") + 1 + 4 = 8 bytes, so 3 MiB / 9 = 349,525 times
    /// `self.x > 0` (2 + 1 = 3); with `maxItems: 10` ten times.
    #[test]
    fn rules_under_unbounded_lists_are_multiplied_by_their_cardinality() {
        let crd = |max_items: Option<u64>| {
            let mut list = json!({"type": "array", "items": {
                "type": "object", "required": ["x"],
                "properties": {"x": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.x > 0"}]}});
            if let Some(n) = max_items {
                list["maxItems"] = json!(n);
            }
            json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {"list": list}}}}}}]}})
        };
        let unbounded = crd_costs(&crd(None));
        let rule = &unbounded[0].rules[0];
        assert_eq!(
            rule.path,
            "spec.validation.openAPIV3Schema.properties[spec].properties[list].items.x-kubernetes-validations[0].rule"
        );
        assert_eq!(
            (rule.per_call, rule.cardinality, rule.cost),
            (3, None, 3 * 349_525)
        );
        let bounded = crd_costs(&crd(Some(10)));
        let rule = &bounded[0].rules[0];
        assert_eq!(
            (rule.per_call, rule.cardinality, rule.cost),
            (3, Some(10), 30)
        );
    }

    #[test]
    fn cost_messages_use_the_api_server_formats() {
        let tail = " (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
        assert_eq!(
            cost_error_message(
                "estimated rule cost",
                20_000_000,
                STATIC_ESTIMATED_COST_LIMIT
            ),
            format!("estimated rule cost exceeds budget by factor of 2.0x{tail}")
        );
        assert_eq!(
            cost_error_message(
                "estimated rule cost",
                12_500_000,
                STATIC_ESTIMATED_COST_LIMIT
            ),
            format!("estimated rule cost exceeds budget by factor of 1.250000x{tail}")
        );
        assert_eq!(
            cost_error_message("estimated rule cost", u64::MAX, STATIC_ESTIMATED_COST_LIMIT),
            format!("estimated rule cost exceeds budget by factor of more than 100x{tail}")
        );
    }

    #[test]
    fn property_names_are_escaped_as_cel_identifiers() {
        assert_eq!(
            escape_property("namespace").as_deref(),
            Some("__namespace__")
        );
        assert_eq!(
            escape_property("a-b.c/d").as_deref(),
            Some("a__dash__b__dot__c__slash__d")
        );
        assert_eq!(
            escape_property("a__b").as_deref(),
            Some("a__underscores__b")
        );
        assert_eq!(escape_property("1a"), None);
        assert_eq!(escape_property("a b"), None);
    }
}
