//! The config reference, `docs/config.md`, is generated from the doc comments of
//! the `Raw*` types in `crates/sluice/src/config/` and of the component configs that
//! live beside their implementation (the store kinds in `crates/sluice-cache/src/`,
//! the trigger kinds in `crates/sluice-schedule/src/triggers/`, the reader,
//! processor, writer and tasklet kinds in `crates/sluice-batch/src/`, the value
//! types in `crates/sluice-core/src/config.rs`): this test renders it and fails
//! when the file is stale, or when a field has no doc comment. A kind whose
//! config is a struct of its own (`Csv(RawCsvReader)`) has that struct's keys
//! listed under its `kind = …` heading.
//!
//! Regenerate with `SLUICE_BLESS=1 cargo test -p sluice --test config_reference`.

use std::path::PathBuf;

/// The config sources (relative to `crates/`), in the order their sections appear
/// in the reference.
const FILES: &[&str] = &[
    "sluice/src/config/mod.rs",
    "sluice/src/config/server.rs",
    "sluice-cache/src/config.rs",
    "sluice-cache/src/memory.rs",
    "sluice-cache/src/redis_store.rs",
    "sluice-cache/src/memcached.rs",
    "sluice-cache/src/tiered.rs",
    "sluice/src/config/upstream.rs",
    "sluice/src/config/route.rs",
    "sluice/src/config/values.rs",
    "sluice-core/src/config.rs",
    "sluice/src/config/job.rs",
    "sluice-schedule/src/triggers/config.rs",
    "sluice-schedule/src/triggers/cron.rs",
    "sluice-schedule/src/triggers/every.rs",
    "sluice-schedule/src/triggers/at.rs",
    "sluice-schedule/src/triggers/watch.rs",
    "sluice-schedule/src/triggers/pg_change.rs",
    "sluice-schedule/src/triggers/sql_change.rs",
    "sluice-batch/src/readers/mod.rs",
    "sluice-batch/src/readers/csv/config.rs",
    "sluice-batch/src/readers/jsonl/config.rs",
    "sluice-batch/src/readers/json/config.rs",
    "sluice-batch/src/readers/http_pages/config.rs",
    "sluice-batch/src/readers/sql/config.rs",
    "sluice-batch/src/readers/log/config.rs",
    "sluice-batch/src/processors/mod.rs",
    "sluice-batch/src/processors/jq/config.rs",
    "sluice-batch/src/writers/mod.rs",
    "sluice-batch/src/writers/sql/config.rs",
    "sluice-batch/src/writers/file/config.rs",
    "sluice-batch/src/writers/cache/config.rs",
    "sluice-batch/src/writers/log_stats/config.rs",
    "sluice-batch/src/writers/email/config.rs",
    "sluice-batch/src/tasklets/mod.rs",
    "sluice-batch/src/tasklets/sql.rs",
    "sluice-batch/src/tasklets/shell.rs",
    "sluice-batch/src/tasklets/http.rs",
    "sluice-batch/src/tasklets/cleanup/config.rs",
    "sluice-batch/src/tasklets/backup/config.rs",
    "sluice/src/config/queue.rs",
    "sluice/src/config/alerts.rs",
];

#[derive(Debug, Default)]
struct Field {
    name: String,
    ty: String,
    docs: Vec<String>,
    attrs: Vec<String>,
}

#[derive(Debug, Default)]
struct Variant {
    name: String,
    docs: Vec<String>,
    fields: Vec<Field>,
    /// The struct of a newtype variant (`Cron(RawCron)`), whose keys it has.
    newtype: Option<String>,
}

#[derive(Debug, Default)]
struct Item {
    name: String,
    docs: Vec<String>,
    fields: Vec<Field>,
    variants: Option<Vec<Variant>>,
}

fn field(line: &str, docs: Vec<String>, attrs: Vec<String>) -> Option<Field> {
    let t = line.trim().strip_suffix(',')?;
    let t = t.strip_prefix("pub ").unwrap_or(t);
    let (name, ty) = t.split_once(": ")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some(Field {
        name: name.to_owned(),
        ty: ty.trim().to_owned(),
        docs,
        attrs,
    })
}

/// Every `pub struct Raw*` and `pub enum Raw*` with a body, with their docs.
fn items(text: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut docs: Vec<String> = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            docs.push(d.trim().to_owned());
            continue;
        }
        if t.starts_with("#[") {
            attrs.push(t.to_owned());
            continue;
        }
        let head = line
            .strip_prefix("pub struct ")
            .map(|r| (r, false))
            .or_else(|| line.strip_prefix("pub enum ").map(|r| (r, true)));
        let Some((rest, is_enum)) = head.filter(|(r, _)| r.starts_with("Raw") && r.ends_with('{'))
        else {
            docs.clear();
            attrs.clear();
            continue;
        };
        let mut item = Item {
            name: rest.trim_end_matches('{').trim().to_owned(),
            docs: std::mem::take(&mut docs),
            variants: is_enum.then(Vec::new),
            ..Item::default()
        };
        attrs.clear();
        let mut variant: Option<Variant> = None;
        for line in lines.by_ref() {
            if line == "}" {
                break;
            }
            let t = line.trim();
            if let Some(d) = t.strip_prefix("///") {
                docs.push(d.trim().to_owned());
            } else if t.starts_with("#[") {
                attrs.push(t.to_owned());
            } else if is_enum && t.ends_with('{') && !t.contains(':') {
                variant = Some(Variant {
                    name: t.trim_end_matches('{').trim().to_owned(),
                    docs: std::mem::take(&mut docs),
                    fields: Vec::new(),
                    newtype: None,
                });
                attrs.clear();
            } else if let Some((name, inner)) = t
                .strip_suffix("),")
                .and_then(|r| r.split_once('('))
                .filter(|_| is_enum)
            {
                if let Some(vs) = item.variants.as_mut() {
                    vs.push(Variant {
                        name: name.to_owned(),
                        docs: std::mem::take(&mut docs),
                        fields: Vec::new(),
                        newtype: Some(inner.to_owned()),
                    });
                }
                attrs.clear();
            } else if is_enum && t == "}," {
                if let (Some(v), Some(vs)) = (variant.take(), item.variants.as_mut()) {
                    vs.push(v);
                }
            } else if let Some(f) =
                field(line, std::mem::take(&mut docs), std::mem::take(&mut attrs))
            {
                if f.attrs.iter().any(|a| a.contains("serde(skip)")) {
                    continue;
                }
                match variant.as_mut() {
                    Some(v) => v.fields.push(f),
                    None => item.fields.push(f),
                }
            } else {
                docs.clear();
                attrs.clear();
            }
        }
        out.push(item);
    }
    out
}

fn strip<'a>(t: &'a str, wrapper: &str) -> Option<&'a str> {
    t.strip_prefix(wrapper)?
        .strip_prefix('<')?
        .strip_suffix('>')
}

/// The type as a reader of the TOML file sees it.
fn toml_type(t: &str) -> String {
    let t = t.trim();
    if let Some(i) = strip(t, "Option").or_else(|| strip(t, "Spanned")) {
        return toml_type(i);
    }
    if let Some(i) = strip(t, "Vec") {
        return format!("array of {}", toml_type(i));
    }
    if let Some(i) = strip(t, "BTreeMap") {
        let v = i.split_once(", ").map_or(i, |(_, v)| v);
        return format!("table of {}", toml_type(v));
    }
    match t {
        "String" | "StoreKind" => "string".into(),
        "bool" => "boolean".into(),
        "u32" | "u64" | "usize" => "integer".into(),
        "f64" => "number".into(),
        "Dur" => "duration".into(),
        "Size" => "size".into(),
        "RawSecret" => "[secret](#rawsecret)".into(),
        "RawTtl" => "duration or `\"upstream\"`".into(),
        "toml::Value" => "table".into(),
        other if other.starts_with("Raw") => {
            format!("[{other}](#{})", other.to_ascii_lowercase())
        }
        other => format!("`{other}`"),
    }
}

fn key(f: &Field) -> String {
    f.attrs
        .iter()
        .find_map(|a| {
            let r = a.split("rename = \"").nth(1)?;
            r.split('"').next().map(str::to_owned)
        })
        .unwrap_or_else(|| f.name.clone())
}

fn required(f: &Field) -> bool {
    !f.ty.starts_with("Option<") && !f.attrs.iter().any(|a| a.contains("default"))
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn table(out: &mut String, fields: &[Field]) {
    out.push_str("| Key | Type | Required | Description |\n|---|---|---|---|\n");
    for f in fields {
        // A flattened struct's keys are written in the same table.
        if f.attrs.iter().any(|a| a.contains("flatten")) {
            out.push_str(&format!(
                "| *(its keys)* | {} | | {} |\n",
                toml_type(&f.ty),
                f.docs.join(" ").replace('|', "\\|")
            ));
            continue;
        }
        // A step's tables are kept as TOML values and typed when the job is
        // built: their types are the Raw* enum of the same name.
        let ty = if f.ty.contains("toml::Value") {
            let mut name = f.name.clone();
            name[..1].make_ascii_uppercase();
            format!("[Raw{name}](#raw{})", f.name)
        } else {
            toml_type(&f.ty)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            key(f),
            ty,
            if required(f) { "yes" } else { "no" },
            f.docs.join(" ").replace('|', "\\|")
        ));
    }
    out.push('\n');
}

/// The reference, and the fields (`RawX.field`) without a doc comment.
fn render() -> (String, Vec<String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the doc comments of the `Raw*` types in `crates/sluice/src/config/`,\n     \
         `crates/sluice-cache/src/`, `crates/sluice-core/src/config.rs`,\n     \
         `crates/sluice-schedule/src/triggers/` and `crates/sluice-batch/src/`;\n     \
         do not edit: regenerate with `SLUICE_BLESS=1 cargo test -p sluice --test config_reference`. -->\n\n\
         Every key of `sluice.toml`, by table. Durations are written `\"200ms\"`, `\"5s\"`, `\"10m\"`,\n\
         `\"6h\"`, `\"1d\"`; sizes `\"512KiB\"`, `\"256MiB\"`, `\"10MB\"` or a number of bytes; secrets\n\
         `{ env = \"NAME\" }` or `{ file = \"PATH\" }`, never inline. `sluice check -c FILE` reports\n\
         every mistake at once, each as `FILE:LINE:COLUMN: KEY: what`.\n\n",
    );
    let mut undocumented = Vec::new();
    let all: Vec<Item> = FILES
        .iter()
        .flat_map(|file| items(&std::fs::read_to_string(dir.join(file)).unwrap()))
        .collect();
    // The structs of newtype variants: listed under their variant, not apart.
    let inlined = |name: &str| {
        all.iter().find(|i| {
            i.name == name
                && i.variants.is_none()
                && all
                    .iter()
                    .flat_map(|e| e.variants.iter().flatten())
                    .any(|v| v.newtype.as_deref() == Some(name))
        })
    };
    for item in &all {
        if item.docs.is_empty() {
            undocumented.push(item.name.clone());
        }
        for f in &item.fields {
            if f.docs.is_empty() {
                undocumented.push(format!("{}.{}", item.name, f.name));
            }
        }
        if inlined(&item.name).is_some() {
            continue;
        }
        out.push_str(&format!("## {}\n\n", item.name));
        if !item.docs.is_empty() {
            out.push_str(&format!("{}\n\n", item.docs.join("\n")));
        }
        if !item.fields.is_empty() {
            table(&mut out, &item.fields);
        }
        for v in item.variants.iter().flatten() {
            out.push_str(&format!("### `kind = \"{}\"`\n\n", snake(&v.name)));
            if v.docs.is_empty() {
                undocumented.push(format!("{}::{}", item.name, v.name));
            } else {
                out.push_str(&format!("{}\n\n", v.docs.join("\n")));
            }
            for f in &v.fields {
                if f.docs.is_empty() {
                    undocumented.push(format!("{}::{}.{}", item.name, v.name, f.name));
                }
            }
            match (&v.newtype, v.newtype.as_deref().and_then(inlined)) {
                (_, Some(inner)) => table(&mut out, &inner.fields),
                (Some(inner), None) => {
                    out.push_str(&format!("The keys of {}.\n\n", toml_type(inner)))
                }
                (None, None) => table(&mut out, &v.fields),
            }
        }
    }
    (out.trim_end().to_owned() + "\n", undocumented)
}

#[test]
fn every_config_field_has_a_doc_comment() {
    let (_, undocumented) = render();
    assert!(
        undocumented.is_empty(),
        "config types and fields without a doc comment (the reference is made of them): {undocumented:?}"
    );
}

#[test]
fn the_config_reference_is_current() {
    let (md, _) = render();
    assert!(
        md.contains("## RawUpstream") && md.contains("`base_url`"),
        "{md}"
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &md).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == md,
        "docs/config.md is stale: regenerate it with `SLUICE_BLESS=1 cargo test -p sluice --test config_reference`"
    );
}
