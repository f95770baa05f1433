//! Helpers shared by the integration tests (real HTTP on loopback).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use enrichd_sim::*;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub fn pop() -> Arc<Population> {
    static POP: OnceLock<Arc<Population>> = OnceLock::new();
    POP.get_or_init(|| Arc::new(Population::generate(7, 3000)))
        .clone()
}

thread_local! {
    // One client per test thread (each #[tokio::test] has its own thread and runtime; building a
    // TLS-capable client is slow, and pooled connections must not outlive their runtime).
    static CLIENT: reqwest::Client = reqwest::Client::builder().no_proxy().build().unwrap();
}

pub fn client() -> reqwest::Client {
    CLIENT.with(|c| c.clone())
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers.get(k).map(|v| v.to_str().unwrap().to_string())
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        text,
    }
}

pub fn json_body(rb: reqwest::RequestBuilder, v: &Value) -> reqwest::RequestBuilder {
    rb.header("content-type", "application/json")
        .body(serde_json::to_vec(v).unwrap())
}

/// What the simulator behind `srv` knows about person `i` on `ch`.
pub fn knows(srv: &SimServer, i: usize, ch: SimChannel) -> Option<Knowledge> {
    srv.options()
        .profile
        .knows(srv.population(), srv.name(), i, ch)
}

/// First person index satisfying `pred`.
pub fn find(pop: &Population, pred: impl Fn(&Person) -> bool) -> usize {
    pop.people()
        .iter()
        .find(|p| pred(p))
        .map(|p| p.index)
        .expect("no person matches the predicate")
}
