//! The SOQL subset a sync connector uses, parsed, type-checked against the schema, planned over
//! the (SystemModstamp, Id) index and evaluated.
//!
//! ```text
//! SELECT field | Parent.field, … | COUNT()  FROM Lead|Contact
//!   [WHERE cond]  [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], …]  [LIMIT n]  [OFFSET n]
//! cond := cond AND cond | cond OR cond | NOT cond | ( cond )
//!       | field (= | != | <> | < | <= | > | >=) literal
//!       | field [NOT] IN ( literal, … ) | field LIKE 'pattern'
//! literal := 'string' | 2024-05-01T12:34:56Z | 2024-05-01T12:34:56.000+0000 | 2024-05-01
//!          | 42 | 4.2 | true | false | null
//! ```
//! Mixing AND and OR without parentheses is refused, as SOQL does. `Parent.field` is a parent
//! relationship field (`Account.Name` on Contact, `ConvertedAccount.Name` on Lead): the
//! relationship is a reference field's `relationshipName` whose `referenceTo` is Account, the
//! field any field of the Account table; allowed in the SELECT list only.

use std::cmp::Ordering;

use super::account::{ACCOUNT, Accounts};
use super::schema::{Kind, Obj, Schema};
use super::store::{Table, Val};
use super::time::{parse_date, parse_datetime, to_id18};

/// A query error: (errorCode, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A bare literal starting with a digit or '-' (number, date, datetime).
    Bare(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based column.
    col: usize,
}

fn err_at(q: &str, col: usize, code: &'static str, msg: impl Into<String>) -> QueryError {
    let caret = " ".repeat(col.saturating_sub(1));
    QueryError {
        code,
        message: format!(
            "\n{q}\n{caret}^\nERROR at Row:1:Column:{col}\n{}",
            msg.into()
        ),
    }
}

fn lex(q: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let push = |out: &mut Vec<Token>, tok| out.push(Token { tok, col });
        match c {
            '(' => {
                push(&mut out, Tok::LParen);
                i += 1;
            }
            ')' => {
                push(&mut out, Tok::RParen);
                i += 1;
            }
            ',' => {
                push(&mut out, Tok::Comma);
                i += 1;
            }
            '=' => {
                push(&mut out, Tok::Op("="));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                push(&mut out, Tok::Op("!="));
                i += 2;
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    push(&mut out, Tok::Op("<="));
                    i += 2;
                }
                Some('>') => {
                    push(&mut out, Tok::Op("!="));
                    i += 2;
                }
                _ => {
                    push(&mut out, Tok::Op("<"));
                    i += 1;
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    push(&mut out, Tok::Op(">="));
                    i += 2;
                } else {
                    push(&mut out, Tok::Op(">"));
                    i += 1;
                }
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(err_at(
                                q,
                                col,
                                "MALFORMED_QUERY",
                                "unexpected end of query: unterminated string literal",
                            ));
                        }
                        Some('\\') => {
                            let e = chars.get(i + 1).copied().unwrap_or('\\');
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                push(&mut out, Tok::Str(s));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], ':' | '.' | '+' | '-'))
                {
                    i += 1;
                }
                push(&mut out, Tok::Bare(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.'))
                {
                    i += 1;
                }
                push(&mut out, Tok::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(err_at(
                    q,
                    col,
                    "MALFORMED_QUERY",
                    format!("unexpected token: '{other}'"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        col: chars.len() + 1,
    });
    Ok(out)
}

/// A typed literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Num(f64),
    Dt(i64),
    Date(i64),
    /// Already normalised: 18-character ids for id/reference fields, as written otherwise.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        fi: usize,
        op: Op,
        lit: Lit,
    },
    In {
        fi: usize,
        neg: bool,
        lits: Vec<Lit>,
    },
    Like {
        fi: usize,
        pattern: Vec<char>,
    },
}

/// One item of the SELECT list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sel {
    /// A field of the queried object.
    Field(usize),
    /// Fields of the Account named by reference field `via` (rendered once, as the nested
    /// object keyed by the relationship name, where its first field was selected).
    Parent { via: usize, fields: Vec<usize> },
}

/// A compiled query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub obj: Obj,
    pub count_only: bool,
    /// The SELECT list, in SELECT order.
    pub fields: Vec<Sel>,
    pub filter: Option<Expr>,
    /// (field, ascending, nulls first).
    pub order: Vec<(usize, bool, bool)>,
    pub limit: Option<usize>,
    pub offset: usize,
}

struct P<'a> {
    q: &'a str,
    toks: Vec<Token>,
    pos: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn unexpected(&self, t: &Token) -> QueryError {
        let what = match &t.tok {
            Tok::Ident(s) | Tok::Bare(s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Op(o) => o.to_string(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::Comma => ",".into(),
            Tok::End => "<EOF>".into(),
        };
        err_at(
            self.q,
            t.col,
            "MALFORMED_QUERY",
            format!("unexpected token: '{what}'"),
        )
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.is_kw(kw) {
            self.pos += 1;
            Ok(())
        } else {
            let t = self.peek().clone();
            Err(self.unexpected(&t))
        }
    }
}

const RESERVED: &[&str] = &[
    "select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc",
    "nulls", "first", "last", "limit", "offset", "null", "true", "false", "group", "having",
];

const DATE_LITERALS: &[&str] = &[
    "today",
    "yesterday",
    "tomorrow",
    "last_week",
    "this_week",
    "last_month",
    "this_month",
    "last_n_days",
    "next_n_days",
    "last_90_days",
];

fn bad_relationship(p: &P, col: usize, rel: &str) -> QueryError {
    err_at(
        p.q,
        col,
        "INVALID_FIELD",
        format!(
            "Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names."
        ),
    )
}

/// The reference field of `schema` whose relationship `rel` (case-insensitive) leads to an
/// Account, the one parent the simulator holds.
fn account_relationship(schema: &Schema, rel: &str) -> Option<usize> {
    schema.fields.iter().enumerate().find_map(|(i, f)| {
        (schema.visible[i]
            && f.reference_to == [ACCOUNT]
            && f.relationship_name
                .is_some_and(|r| r.eq_ignore_ascii_case(rel)))
        .then_some(i)
    })
}

/// Resolve a parent relationship field `Rel.Field` of the SELECT list: (reference field,
/// Account field). An unknown relationship (or one to another object, or a deeper path) →
/// `INVALID_FIELD` "Didn't understand relationship"; an unknown Account field → `INVALID_FIELD`
/// "No such column … on entity 'Account'".
fn parent_field(
    p: &P,
    schema: &Schema,
    accounts: &Accounts,
    rel: &str,
    rest: &str,
    col: usize,
) -> Result<(usize, usize), QueryError> {
    let via = account_relationship(schema, rel).ok_or_else(|| bad_relationship(p, col, rel))?;
    if let Some((deeper, _)) = rest.split_once('.') {
        return Err(bad_relationship(p, col, deeper));
    }
    let fi = accounts.idx(rest).ok_or_else(|| {
        err_at(
            p.q,
            col,
            "INVALID_FIELD",
            format!(
                "No such column '{rest}' on entity '{ACCOUNT}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
            ),
        )
    })?;
    Ok((via, fi))
}

/// Resolve a field name (case-insensitive) or fail with Salesforce's `INVALID_FIELD`. A
/// relationship path is refused here (WHERE and ORDER BY): `MALFORMED_QUERY` naming the
/// simulator for an Account relationship, `INVALID_FIELD` for any other.
fn field(p: &P, schema: &Schema, name: &str, col: usize) -> Result<usize, QueryError> {
    if let Some((rel, _)) = name.split_once('.') {
        if account_relationship(schema, rel).is_some() {
            return Err(err_at(
                p.q,
                col,
                "MALFORMED_QUERY",
                format!(
                    "relationship field {name} is only supported in the SELECT list by the simulator"
                ),
            ));
        }
        return Err(bad_relationship(p, col, rel));
    }
    schema.idx(name).ok_or_else(|| {
        err_at(
            p.q,
            col,
            "INVALID_FIELD",
            format!(
                "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                schema.obj.name()
            ),
        )
    })
}

/// Parse and type-check `q`. `schema_for` maps an object name to its schema; `accounts`
/// resolves parent relationship fields.
pub(crate) fn parse<'s>(
    q: &str,
    schema_for: impl Fn(Obj) -> &'s Schema,
    accounts: &Accounts,
) -> Result<Query, QueryError> {
    let toks = lex(q)?;
    let mut p = P { q, toks, pos: 0 };
    p.expect_kw("select")?;
    // Field list (names and columns), resolved once FROM is known.
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut count_only = false;
    loop {
        let t = p.next();
        match &t.tok {
            Tok::Ident(s) if s.eq_ignore_ascii_case("count") => {
                if p.peek().tok == Tok::LParen {
                    p.next();
                    let close = p.next();
                    if close.tok != Tok::RParen {
                        return Err(err_at(
                            q,
                            close.col,
                            "MALFORMED_QUERY",
                            "only COUNT() is supported by the simulator",
                        ));
                    }
                    count_only = true;
                } else {
                    names.push((s.clone(), t.col));
                }
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("fields") && p.peek().tok == Tok::LParen => {
                return Err(err_at(
                    q,
                    t.col,
                    "MALFORMED_QUERY",
                    "FIELDS() is not supported by the simulator",
                ));
            }
            Tok::Ident(s) if !RESERVED.contains(&s.to_ascii_lowercase().as_str()) => {
                names.push((s.clone(), t.col))
            }
            _ => return Err(p.unexpected(&t)),
        }
        if p.peek().tok == Tok::Comma {
            p.next();
            continue;
        }
        break;
    }
    if count_only && !names.is_empty() {
        let t = p.peek().clone();
        return Err(err_at(
            q,
            t.col,
            "MALFORMED_QUERY",
            "COUNT() and other fields cannot be selected together",
        ));
    }
    p.expect_kw("from")?;
    let t = p.next();
    let obj = match &t.tok {
        Tok::Ident(s) => Obj::parse(s).ok_or_else(|| {
            err_at(
                q,
                t.col,
                "INVALID_TYPE",
                format!(
                    "sObject type '{s}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            )
        })?,
        _ => return Err(p.unexpected(&t)),
    };
    let schema = schema_for(obj);
    let mut fields: Vec<Sel> = Vec::with_capacity(names.len());
    for (n, col) in &names {
        let dup = |what: String| {
            err_at(
                q,
                *col,
                "MALFORMED_QUERY",
                format!("duplicate field selected: {what}"),
            )
        };
        if let Some((rel, rest)) = n.split_once('.') {
            let (via, fi) = parent_field(&p, schema, accounts, rel, rest, *col)?;
            let group = fields.iter_mut().find_map(|s| match s {
                Sel::Parent { via: v, fields } if *v == via => Some(fields),
                _ => None,
            });
            match group {
                Some(g) if g.contains(&fi) => {
                    let rel = schema.def(via).relationship_name.unwrap_or(rel);
                    return Err(dup(format!("{rel}.{}", accounts.def(fi).name)));
                }
                Some(g) => g.push(fi),
                None => fields.push(Sel::Parent {
                    via,
                    fields: vec![fi],
                }),
            }
            continue;
        }
        let fi = field(&p, schema, n, *col)?;
        if fields.contains(&Sel::Field(fi)) {
            return Err(dup(schema.def(fi).name.to_string()));
        }
        fields.push(Sel::Field(fi));
    }
    let mut filter = None;
    if p.is_kw("where") {
        p.next();
        filter = Some(parse_or(&mut p, schema)?);
    }
    let mut order = Vec::new();
    if p.is_kw("order") {
        p.next();
        p.expect_kw("by")?;
        loop {
            let t = p.next();
            let Tok::Ident(n) = &t.tok else {
                return Err(p.unexpected(&t));
            };
            let fi = field(&p, schema, n, t.col)?;
            if !schema.def(fi).sortable {
                return Err(err_at(
                    q,
                    t.col,
                    "INVALID_FIELD",
                    format!(
                        "field '{}' can not be sorted in a query call",
                        schema.def(fi).name
                    ),
                ));
            }
            let mut asc = true;
            if p.is_kw("asc") {
                p.next();
            } else if p.is_kw("desc") {
                p.next();
                asc = false;
            }
            let mut nulls_first = asc;
            if p.is_kw("nulls") {
                p.next();
                if p.is_kw("first") {
                    p.next();
                    nulls_first = true;
                } else {
                    p.expect_kw("last")?;
                    nulls_first = false;
                }
            }
            order.push((fi, asc, nulls_first));
            if p.peek().tok == Tok::Comma {
                p.next();
                continue;
            }
            break;
        }
    }
    let mut limit = None;
    let mut offset = 0;
    loop {
        if p.is_kw("limit") && limit.is_none() {
            p.next();
            let t = p.next();
            match &t.tok {
                Tok::Bare(s) => match s.parse::<usize>() {
                    Ok(n) => limit = Some(n),
                    Err(_) => return Err(p.unexpected(&t)),
                },
                _ => return Err(p.unexpected(&t)),
            }
        } else if p.is_kw("offset") {
            p.next();
            let t = p.next();
            match &t.tok {
                Tok::Bare(s) => match s.parse::<usize>() {
                    Ok(n) if n <= 2000 => offset = n,
                    Ok(n) => {
                        return Err(QueryError {
                            code: "NUMBER_OUTSIDE_VALID_RANGE",
                            message: format!("Maximum SOQL offset allowed is 2000, got {n}"),
                        });
                    }
                    Err(_) => return Err(p.unexpected(&t)),
                },
                _ => return Err(p.unexpected(&t)),
            }
        } else {
            break;
        }
    }
    let t = p.peek().clone();
    if t.tok != Tok::End {
        return Err(p.unexpected(&t));
    }
    Ok(Query {
        obj,
        count_only,
        fields,
        filter,
        order,
        limit,
        offset,
    })
}

fn parse_or(p: &mut P, s: &Schema) -> Result<Expr, QueryError> {
    let first = parse_and(p, s)?;
    if !p.is_kw("or") {
        return Ok(first);
    }
    let mut parts = vec![first];
    while p.is_kw("or") {
        p.next();
        parts.push(parse_and(p, s)?);
    }
    if p.is_kw("and") {
        let t = p.peek().clone();
        return Err(err_at(
            p.q,
            t.col,
            "MALFORMED_QUERY",
            "unexpected token: 'AND' (use parentheses when mixing AND and OR)",
        ));
    }
    Ok(Expr::Or(parts))
}

fn parse_and(p: &mut P, s: &Schema) -> Result<Expr, QueryError> {
    let first = parse_unary(p, s)?;
    if !p.is_kw("and") {
        return Ok(first);
    }
    let mut parts = vec![first];
    while p.is_kw("and") {
        p.next();
        parts.push(parse_unary(p, s)?);
    }
    if p.is_kw("or") {
        let t = p.peek().clone();
        return Err(err_at(
            p.q,
            t.col,
            "MALFORMED_QUERY",
            "unexpected token: 'OR' (use parentheses when mixing AND and OR)",
        ));
    }
    Ok(Expr::And(parts))
}

fn parse_unary(p: &mut P, s: &Schema) -> Result<Expr, QueryError> {
    if p.is_kw("not") {
        p.next();
        return Ok(Expr::Not(Box::new(parse_unary(p, s)?)));
    }
    if p.peek().tok == Tok::LParen {
        p.next();
        let e = parse_or(p, s)?;
        let t = p.next();
        if t.tok != Tok::RParen {
            return Err(p.unexpected(&t));
        }
        return Ok(e);
    }
    parse_cond(p, s)
}

fn parse_cond(p: &mut P, s: &Schema) -> Result<Expr, QueryError> {
    let t = p.next();
    let Tok::Ident(name) = &t.tok else {
        return Err(p.unexpected(&t));
    };
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(p.unexpected(&t));
    }
    let fi = field(p, s, name, t.col)?;
    let def = s.def(fi);
    if !def.filterable {
        return Err(err_at(
            p.q,
            t.col,
            "INVALID_FIELD",
            format!("field '{}' can not be filtered in a query call", def.name),
        ));
    }
    let opt = p.next();
    match &opt.tok {
        Tok::Op(o) => {
            let op = match *o {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                _ => Op::Ge,
            };
            let lt = p.next();
            let lit = literal(p, s, fi, &lt)?;
            if lit == Lit::Null && !matches!(op, Op::Eq | Op::Ne) {
                return Err(err_at(
                    p.q,
                    lt.col,
                    "MALFORMED_QUERY",
                    "unexpected token: 'null'",
                ));
            }
            if def.kind() == Kind::Bool && !matches!(op, Op::Eq | Op::Ne) {
                return Err(err_at(
                    p.q,
                    opt.col,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    format!("invalid operator on boolean field: {}", def.name),
                ));
            }
            Ok(Expr::Cmp { fi, op, lit })
        }
        Tok::Ident(k) if k.eq_ignore_ascii_case("in") || k.eq_ignore_ascii_case("not") => {
            let neg = k.eq_ignore_ascii_case("not");
            if neg {
                p.expect_kw("in")?;
            }
            let lp = p.next();
            if lp.tok != Tok::LParen {
                return Err(p.unexpected(&lp));
            }
            let mut lits = Vec::new();
            loop {
                let lt = p.next();
                lits.push(literal(p, s, fi, &lt)?);
                let sep = p.next();
                match sep.tok {
                    Tok::Comma => continue,
                    Tok::RParen => break,
                    _ => return Err(p.unexpected(&sep)),
                }
            }
            Ok(Expr::In { fi, neg, lits })
        }
        Tok::Ident(k) if k.eq_ignore_ascii_case("like") => {
            let lt = p.next();
            let Tok::Str(pat) = &lt.tok else {
                return Err(p.unexpected(&lt));
            };
            if def.kind() != Kind::Text {
                return Err(err_at(
                    p.q,
                    opt.col,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    format!("invalid operator on field: {}", def.name),
                ));
            }
            Ok(Expr::Like {
                fi,
                pattern: pat.to_lowercase().chars().collect(),
            })
        }
        _ => Err(p.unexpected(&opt)),
    }
}

/// A literal, type-checked against the field it is compared with.
fn literal(p: &P, s: &Schema, fi: usize, t: &Token) -> Result<Lit, QueryError> {
    let def = s.def(fi);
    let type_err = |quoted: bool| {
        err_at(
            p.q,
            t.col,
            "INVALID_FIELD",
            format!(
                "value of filter criterion for field '{}' must be of type {} and should {}be enclosed in quotes",
                def.name,
                def.soql_type_name(),
                if quoted { "" } else { "not " }
            ),
        )
    };
    match &t.tok {
        Tok::Ident(k) if k.eq_ignore_ascii_case("null") => Ok(Lit::Null),
        Tok::Ident(k) if k.eq_ignore_ascii_case("true") || k.eq_ignore_ascii_case("false") => {
            if def.kind() == Kind::Bool {
                Ok(Lit::Bool(k.eq_ignore_ascii_case("true")))
            } else {
                Err(type_err(def.kind() == Kind::Text))
            }
        }
        Tok::Ident(k)
            if DATE_LITERALS
                .iter()
                .any(|d| k.to_ascii_lowercase().starts_with(d)) =>
        {
            Err(err_at(
                p.q,
                t.col,
                "MALFORMED_QUERY",
                format!("date literal {k} is not supported by the simulator"),
            ))
        }
        Tok::Str(v) => match def.kind() {
            Kind::Text => {
                if matches!(def.ty, "id" | "reference") {
                    match to_id18(v) {
                        Ok(id) => Ok(Lit::Text(id)),
                        Err(_) => Err(err_at(
                            p.q,
                            t.col,
                            "INVALID_QUERY_FILTER_OPERATOR",
                            format!("invalid ID field: {v}"),
                        )),
                    }
                } else {
                    Ok(Lit::Text(v.clone()))
                }
            }
            _ => Err(type_err(false)),
        },
        Tok::Bare(v) => match def.kind() {
            Kind::DateTime => parse_datetime(v).map(Lit::Dt).ok_or_else(|| {
                if parse_date(v).is_some() {
                    type_err(false)
                } else {
                    err_at(
                        p.q,
                        t.col,
                        "MALFORMED_QUERY",
                        format!("line 1:{} no viable alternative at character '{v}'", t.col),
                    )
                }
            }),
            Kind::Date => parse_date(v).map(Lit::Date).ok_or_else(|| type_err(false)),
            Kind::Num => v.parse::<f64>().map(Lit::Num).map_err(|_| type_err(false)),
            Kind::Text => Err(type_err(true)),
            _ => Err(type_err(false)),
        },
        _ => Err(p.unexpected(t)),
    }
}

// ------------------------------------------------------------------------------- evaluation

fn cmp_ci(a: &str, b: &str) -> Ordering {
    let mut x = a.bytes().map(|c| c.to_ascii_lowercase());
    let mut y = b.bytes().map(|c| c.to_ascii_lowercase());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p != q => return p.cmp(&q),
            _ => {}
        }
    }
}

/// Compare a stored value with a literal (None: incomparable, e.g. null).
fn cmp_val(v: &Val, lit: &Lit, id_like: bool) -> Option<Ordering> {
    match (v, lit) {
        (Val::Text(a), Lit::Text(b)) => Some(if id_like {
            a.as_bytes()[..a.len().min(15)].cmp(&b.as_bytes()[..b.len().min(15)])
        } else {
            cmp_ci(a, b)
        }),
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::Num(a), Lit::Num(b)) => a.partial_cmp(b),
        (Val::Dt(a), Lit::Dt(b)) => Some(a.cmp(b)),
        (Val::Date(a), Lit::Date(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn like(s: &[char], p: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('%', rest)) => (0..=s.len()).any(|k| like(&s[k..], rest)),
        Some(('_', rest)) => !s.is_empty() && like(&s[1..], rest),
        Some(('\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && like(&s[1..], &rest[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && like(&s[1..], rest),
    }
}

pub(crate) fn eval(e: &Expr, t: &Table, i: u32) -> bool {
    let vals = &t.recs[i as usize].vals;
    match e {
        Expr::And(v) => v.iter().all(|x| eval(x, t, i)),
        Expr::Or(v) => v.iter().any(|x| eval(x, t, i)),
        Expr::Not(x) => !eval(x, t, i),
        Expr::Cmp { fi, op, lit } => {
            let v = &vals[*fi];
            if *lit == Lit::Null {
                return match op {
                    Op::Eq => v.is_null(),
                    _ => !v.is_null(),
                };
            }
            let id_like = matches!(t.schema.def(*fi).ty, "id" | "reference");
            match cmp_val(v, lit, id_like) {
                None => *op == Op::Ne && !v.is_null(),
                Some(o) => match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::Ne => o != Ordering::Equal,
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    Op::Ge => o != Ordering::Less,
                },
            }
        }
        Expr::In { fi, neg, lits } => {
            let v = &vals[*fi];
            let id_like = matches!(t.schema.def(*fi).ty, "id" | "reference");
            let hit = lits.iter().any(|l| {
                if *l == Lit::Null {
                    v.is_null()
                } else {
                    cmp_val(v, l, id_like) == Some(Ordering::Equal)
                }
            });
            hit != *neg
        }
        Expr::Like { fi, pattern } => match &vals[*fi] {
            Val::Text(s) => {
                let s: Vec<char> = s.to_lowercase().chars().collect();
                like(&s, pattern)
            }
            _ => false,
        },
    }
}

/// Inclusive SystemModstamp bounds implied by a filter.
fn bounds(e: &Expr, ms: usize) -> (Option<i64>, Option<i64>) {
    match e {
        Expr::Cmp {
            fi,
            op,
            lit: Lit::Dt(t),
        } if *fi == ms => match op {
            Op::Eq => (Some(*t), Some(*t)),
            Op::Gt | Op::Ge => (Some(*t), None),
            Op::Lt | Op::Le => (None, Some(*t)),
            Op::Ne => (None, None),
        },
        Expr::And(v) => {
            let mut lo: Option<i64> = None;
            let mut hi: Option<i64> = None;
            for x in v {
                let (l, h) = bounds(x, ms);
                if let Some(l) = l {
                    lo = Some(lo.map_or(l, |c| c.max(l)));
                }
                if let Some(h) = h {
                    hi = Some(hi.map_or(h, |c| c.min(h)));
                }
            }
            (lo, hi)
        }
        Expr::Or(v) => {
            let mut lo: Option<i64> = Some(i64::MAX);
            let mut hi: Option<i64> = Some(i64::MIN);
            for x in v {
                let (l, h) = bounds(x, ms);
                lo = match (lo, l) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                };
                hi = match (hi, h) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            (lo, hi)
        }
        _ => (None, None),
    }
}

fn cmp_rows(t: &Table, a: u32, b: u32, order: &[(usize, bool, bool)]) -> Ordering {
    for &(fi, asc, nulls_first) in order {
        let (x, y) = (&t.recs[a as usize].vals[fi], &t.recs[b as usize].vals[fi]);
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = match (x, y) {
                    (Val::Text(p), Val::Text(q)) => {
                        if matches!(t.schema.def(fi).ty, "id" | "reference") {
                            p.cmp(q)
                        } else {
                            cmp_ci(p, q)
                        }
                    }
                    (Val::Bool(p), Val::Bool(q)) => p.cmp(q),
                    (Val::Num(p), Val::Num(q)) => p.partial_cmp(q).unwrap_or(Ordering::Equal),
                    (Val::Dt(p), Val::Dt(q)) | (Val::Date(p), Val::Date(q)) => p.cmp(q),
                    _ => Ordering::Equal,
                };
                if asc { o } else { o.reverse() }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.cmp(&b)
}

/// The matching record indices, in result order, OFFSET and LIMIT applied. `all`: include
/// deleted rows (queryAll).
pub(crate) fn execute(q: &Query, t: &Table, all: bool) -> Vec<u32> {
    let s = t.schema.sys;
    let keep = |i: u32| -> bool {
        (all || !t.is_deleted(i)) && q.filter.as_ref().is_none_or(|f| eval(f, t, i))
    };
    let want = q.limit.map(|l| l.saturating_add(q.offset));
    let index_order = match q.order.as_slice() {
        [] => false,
        [(f, true, _)] => *f == s.modstamp,
        [(f, true, _), (g, true, _)] => *f == s.modstamp && *g == s.id,
        _ => false,
    };
    let mut rows: Vec<u32> = Vec::new();
    if index_order {
        let (lo, hi) = q
            .filter
            .as_ref()
            .map(|f| bounds(f, s.modstamp))
            .unwrap_or((None, None));
        let lo = lo.unwrap_or(i64::MIN);
        let hi = hi.unwrap_or(i64::MAX);
        if lo <= hi {
            for &(_, i) in t.index.range((lo, 0)..=(hi, u32::MAX)) {
                if keep(i) {
                    rows.push(i);
                    if want.is_some_and(|w| rows.len() >= w) {
                        break;
                    }
                }
            }
        }
    } else {
        for i in 0..t.recs.len() as u32 {
            if keep(i) {
                rows.push(i);
                if q.order.is_empty() && want.is_some_and(|w| rows.len() >= w) {
                    break;
                }
            }
        }
        if !q.order.is_empty() {
            rows.sort_by(|a, b| cmp_rows(t, *a, *b, &q.order));
        }
    }
    let mut rows: Vec<u32> = rows.into_iter().skip(q.offset).collect();
    if let Some(l) = q.limit {
        rows.truncate(l);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::build(Obj::Lead, &[])
    }

    #[test]
    fn parses_keyset_query() {
        let s = schema();
        let q = parse(
            "SELECT Id, Email, SystemModstamp FROM Lead WHERE IsConverted = false AND ((SystemModstamp > 2024-05-01T12:34:56.000+0000) OR (SystemModstamp = 2024-05-01T12:34:56Z AND Id > '00Q5e0000000001')) ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000",
            |_| &s,
            &Accounts::new(),
        );
        let q = match q {
            Ok(q) => q,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(q.fields.len(), 3);
        assert_eq!(q.limit, Some(2000));
        let (lo, hi) = bounds(
            q.filter.as_ref().unwrap_or(&Expr::And(vec![])),
            s.sys.modstamp,
        );
        assert_eq!(lo, Some(1_714_566_896_000));
        assert_eq!(hi, None);
    }

    #[test]
    fn errors() {
        let s = schema();
        let a = Accounts::new();
        let e = parse("SELECT Id, Foo__c FROM Lead", |_| &s, &a).err();
        assert_eq!(e.as_ref().map(|e| e.code), Some("INVALID_FIELD"));
        assert!(
            e.map(|e| e.message)
                .unwrap_or_default()
                .contains("No such column 'Foo__c' on entity 'Lead'")
        );
        let e = parse("SELECT Id FRM Lead", |_| &s, &a).err();
        assert_eq!(e.map(|e| e.code), Some("MALFORMED_QUERY"));
        let e = parse(
            "SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01'",
            |_| &s,
            &a,
        )
        .err();
        assert_eq!(e.map(|e| e.code), Some("INVALID_FIELD"));
        let e = parse(
            "SELECT Id FROM Lead WHERE A = 1 AND B = 2 OR C = 3",
            |_| &s,
            &a,
        )
        .err();
        assert!(e.is_some());
        let e = parse(
            "SELECT Id FROM Lead WHERE SystemModstamp > 2024-05-01T12:34:56.000 0000",
            |_| &s,
            &a,
        )
        .err();
        assert_eq!(e.map(|e| e.code), Some("MALFORMED_QUERY"));
        let e = parse("SELECT Id FROM Account", |_| &s, &a).err();
        assert_eq!(e.map(|e| e.code), Some("INVALID_TYPE"));
    }

    #[test]
    fn parent_fields_group_by_relationship() {
        let c = Schema::build(Obj::Contact, &[]);
        let a = Accounts::new();
        let q = parse(
            "SELECT Id, Account.Name, Email, account.WEBSITE FROM Contact",
            |_| &c,
            &a,
        );
        let q = match q {
            Ok(q) => q,
            Err(e) => panic!("{e:?}"),
        };
        let via = c.idx("AccountId");
        let (name, web) = (a.idx("Name"), a.idx("Website"));
        assert_eq!(q.fields.len(), 3, "{:?}", q.fields);
        match (&q.fields[1], via, name, web) {
            (Sel::Parent { via: v, fields }, Some(via), Some(n), Some(w)) => {
                assert_eq!(*v, via);
                assert_eq!(fields, &vec![n, w]);
            }
            other => panic!("{other:?}"),
        }
        let l = Schema::build(Obj::Lead, &[]);
        let e = parse("SELECT Account.Name FROM Lead", |_| &l, &a).err();
        assert_eq!(e.map(|e| e.code), Some("INVALID_FIELD"));
    }

    #[test]
    fn like_patterns() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(like(&c("jane@acme.com"), &c("%@acme.com")));
        assert!(like(&c("abc"), &c("a_c")));
        assert!(!like(&c("abcd"), &c("a_c")));
    }
}
