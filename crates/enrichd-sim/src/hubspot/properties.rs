//! Properties API (reference §3): definitions and groups.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Shared;
use super::http::{Reply, Req, body_json, error, invalid};
use super::schema::{DefError, apply_patch, parse_create, parse_group};
use super::store::Obj;
use super::time::{iso_ms, now_ms};

fn def_error(sh: &Shared, e: DefError) -> Reply {
    error(sh, e.0, e.1, &e.2)
}

pub(crate) fn list(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    if req.q("archived") == Some("true") {
        return Reply::json(200, json!({"results": []}));
    }
    let wanted = req.q_list("properties");
    let st = sh.store();
    let results: Vec<Value> = st
        .of(obj)
        .schema
        .defs
        .iter()
        .filter(|d| wanted.is_empty() || wanted.contains(&d.name))
        .map(|d| d.json())
        .collect();
    Reply::json(200, json!({"results": results}))
}

pub(crate) fn get(sh: &Arc<Shared>, obj: Obj, name: &str) -> Reply {
    let v = sh.store().of(obj).schema.get(name).map(|d| d.json());
    match v {
        Some(v) => Reply::json(200, v),
        None => error(
            sh,
            404,
            "OBJECT_NOT_FOUND",
            &format!(
                "Unable to find property with name {name} for object type {}",
                obj.plural()
            ),
        ),
    }
}

pub(crate) fn create(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = sh.store();
    let schema = &mut st.of_mut(obj).schema;
    match parse_create(schema, &body, now_ms()) {
        Ok(def) => {
            let v = def.json();
            schema.add(def);
            Reply::json(201, v).inputs(1)
        }
        Err(e) => {
            drop(st);
            def_error(sh, e).inputs(1)
        }
    }
}

pub(crate) fn patch(sh: &Arc<Shared>, req: &Req, obj: Obj, name: &str) -> Reply {
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = sh.store();
    let schema = &mut st.of_mut(obj).schema;
    let Some(i) = schema.idx(name) else {
        drop(st);
        return error(
            sh,
            404,
            "OBJECT_NOT_FOUND",
            &format!(
                "Unable to find property with name {name} for object type {}",
                obj.plural()
            ),
        );
    };
    let mut def = schema.def(i).clone();
    match apply_patch(schema, &mut def, &body, now_ms()) {
        Ok(()) => {
            let v = def.json();
            schema.defs[usize::from(i)] = def;
            Reply::json(200, v).inputs(1)
        }
        Err(e) => {
            drop(st);
            def_error(sh, e).inputs(1)
        }
    }
}

pub(crate) fn batch_create(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let started = now_ms();
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return invalid(
            sh,
            "Invalid input JSON on line 1, column 1: Missing required creator property 'inputs'",
        );
    };
    let n = inputs.len();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let mut st = sh.store();
        let schema = &mut st.of_mut(obj).schema;
        for inp in inputs {
            match parse_create(schema, inp, now_ms()) {
                Ok(def) => {
                    results.push(def.json());
                    schema.add(def);
                }
                Err((_, category, message)) => {
                    let name = inp.get("name").and_then(Value::as_str).unwrap_or("");
                    errors.push(json!({"status": "error", "category": category,
                        "message": message, "context": {"name": [name]}, "errors": [],
                        "links": {}}));
                }
            }
        }
    }
    let mut m = Map::new();
    m.insert("status".into(), json!("COMPLETE"));
    m.insert("results".into(), Value::Array(results));
    let status = if errors.is_empty() {
        201
    } else {
        m.insert("numErrors".into(), json!(errors.len()));
        m.insert("errors".into(), Value::Array(errors));
        207
    };
    m.insert("startedAt".into(), json!(iso_ms(started)));
    m.insert("completedAt".into(), json!(iso_ms(now_ms())));
    Reply::json(status, Value::Object(m)).inputs(n)
}

pub(crate) fn groups(sh: &Arc<Shared>, obj: Obj) -> Reply {
    let results: Vec<Value> = sh
        .store()
        .of(obj)
        .schema
        .groups
        .iter()
        .map(|g| g.json())
        .collect();
    Reply::json(200, json!({"results": results}))
}

pub(crate) fn group_get(sh: &Arc<Shared>, obj: Obj, name: &str) -> Reply {
    let g = sh
        .store()
        .of(obj)
        .schema
        .groups
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.json());
    match g {
        Some(v) => Reply::json(200, v),
        None => error(
            sh,
            404,
            "OBJECT_NOT_FOUND",
            &format!("Unable to find property group with name {name}"),
        ),
    }
}

pub(crate) fn group_create(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = sh.store();
    let schema = &mut st.of_mut(obj).schema;
    match parse_group(schema, &body) {
        Ok(g) => {
            let v = g.json();
            schema.groups.push(g);
            Reply::json(201, v)
        }
        Err(e) => {
            drop(st);
            def_error(sh, e)
        }
    }
}
