//! Objects, field definitions and the describe answer.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::fields::{contact_fields, lead_fields};

/// The sObjects the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Obj {
    Lead,
    Contact,
}

impl Obj {
    pub const ALL: [Obj; 2] = [Obj::Lead, Obj::Contact];

    pub fn name(self) -> &'static str {
        match self {
            Obj::Lead => "Lead",
            Obj::Contact => "Contact",
        }
    }
    pub fn prefix(self) -> &'static str {
        match self {
            Obj::Lead => "00Q",
            Obj::Contact => "003",
        }
    }
    /// Case-insensitive, as Salesforce matches sObject names.
    pub fn parse(s: &str) -> Option<Obj> {
        if s.eq_ignore_ascii_case("lead") {
            Some(Obj::Lead)
        } else if s.eq_ignore_ascii_case("contact") {
            Some(Obj::Contact)
        } else {
            None
        }
    }
    pub(crate) fn of_id(id: &str) -> Option<Obj> {
        Obj::ALL.into_iter().find(|o| id.starts_with(o.prefix()))
    }
    fn specs(self) -> &'static [FieldSpec] {
        match self {
            Obj::Lead => lead_fields(),
            Obj::Contact => contact_fields(),
        }
    }
    fn label_plural(self) -> &'static str {
        match self {
            Obj::Lead => "Leads",
            Obj::Contact => "Contacts",
        }
    }
}

/// One field as describe reports it (the subset of attributes that vary between fields; the
/// rest are constant and filled in by [`Schema::describe`]).
#[derive(Debug)]
pub(crate) struct FieldSpec {
    pub name: &'static str,
    pub label: &'static str,
    pub ty: &'static str,
    pub length: u32,
    pub byte_length: u32,
    pub precision: u32,
    pub digits: u32,
    pub soap_type: &'static str,
    pub updateable: bool,
    pub createable: bool,
    pub nillable: bool,
    pub custom: bool,
    pub calculated: bool,
    pub formula: Option<&'static str>,
    pub compound: Option<&'static str>,
    pub extra_type_info: Option<&'static str>,
    pub defaulted_on_create: bool,
    pub filterable: bool,
    pub sortable: bool,
    pub groupable: bool,
    pub aggregatable: bool,
    pub id_lookup: bool,
    pub name_field: bool,
    pub permissionable: bool,
    pub search_prefilterable: bool,
    pub help: Option<&'static str>,
    /// (value, label, default).
    pub picklist: &'static [(&'static str, &'static str, bool)],
    pub restricted: bool,
    pub reference_to: &'static [&'static str],
    pub relationship_name: Option<&'static str>,
}

/// How a field's value is held and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// id, string, email, phone, url, textarea, picklist, reference: a JSON string.
    Text,
    Bool,
    /// double, currency, int, percent: a JSON number.
    Num,
    /// Epoch ms; `2024-05-01T12:34:56.000+0000`.
    DateTime,
    /// Days since the epoch; `YYYY-MM-DD`.
    Date,
    /// A compound address, rendered as an object from its parts; not filterable or writable.
    Address,
}

impl FieldSpec {
    pub(crate) fn kind(&self) -> Kind {
        match self.ty {
            "boolean" => Kind::Bool,
            "double" | "currency" | "int" | "percent" => Kind::Num,
            "datetime" => Kind::DateTime,
            "date" => Kind::Date,
            "address" => Kind::Address,
            _ => Kind::Text,
        }
    }
    /// The SOAP type name used in filter type errors (`dateTime`, `boolean`, `string`, …).
    pub(crate) fn soql_type_name(&self) -> &'static str {
        match self.kind() {
            Kind::Bool => "boolean",
            Kind::Num => "double",
            Kind::DateTime => "dateTime",
            Kind::Date => "date",
            _ => match self.ty {
                "id" => "id",
                "reference" => "reference",
                "picklist" => "picklist",
                _ => "string",
            },
        }
    }
    /// A field whose length limit applies to written values.
    pub(crate) fn has_length(&self) -> bool {
        self.kind() == Kind::Text && self.length > 0
    }
}

/// Well-known field positions, resolved once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sys {
    pub id: usize,
    pub is_deleted: usize,
    pub modstamp: usize,
    pub last_modified: usize,
    pub last_modified_by: usize,
    pub created: usize,
    pub created_by: usize,
    pub owner: usize,
    pub first: usize,
    pub last: usize,
    pub name: usize,
    pub email: usize,
    pub is_converted: Option<usize>,
    pub converted_date: Option<usize>,
    pub email_domain: Option<usize>,
}

/// The fields of one object visible to the API user.
#[derive(Debug)]
pub(crate) struct Schema {
    pub obj: Obj,
    pub fields: &'static [FieldSpec],
    /// Visible (not omitted) per field index.
    pub visible: Vec<bool>,
    by_lower: HashMap<String, usize>,
    pub sys: Sys,
}

impl Schema {
    /// The object's fields minus `omit` (field API names, any case).
    pub(crate) fn build(obj: Obj, omit: &[String]) -> Schema {
        let fields = obj.specs();
        let omit_lc: Vec<String> = omit.iter().map(|s| s.to_ascii_lowercase()).collect();
        let mut visible = Vec::with_capacity(fields.len());
        let mut by_lower = HashMap::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let lc = f.name.to_ascii_lowercase();
            // System fields cannot be hidden.
            let hide = f.custom && omit_lc.contains(&lc);
            visible.push(!hide);
            if !hide {
                by_lower.insert(lc, i);
            }
        }
        let pos = |n: &str| fields.iter().position(|f| f.name == n);
        let must = |n: &str| pos(n).unwrap_or(0);
        let sys = Sys {
            id: must("Id"),
            is_deleted: must("IsDeleted"),
            modstamp: must("SystemModstamp"),
            last_modified: must("LastModifiedDate"),
            last_modified_by: must("LastModifiedById"),
            created: must("CreatedDate"),
            created_by: must("CreatedById"),
            owner: must("OwnerId"),
            first: must("FirstName"),
            last: must("LastName"),
            name: must("Name"),
            email: must("Email"),
            is_converted: pos("IsConverted"),
            converted_date: pos("ConvertedDate"),
            email_domain: pos("Email_Domain__c").filter(|&i| visible[i]),
        };
        Schema {
            obj,
            fields,
            visible,
            by_lower,
            sys,
        }
    }

    /// Field index by API name, case-insensitively (None: no such visible field).
    pub(crate) fn idx(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.by_lower.get(name) {
            return Some(i);
        }
        self.by_lower.get(&name.to_ascii_lowercase()).copied()
    }

    pub(crate) fn def(&self, i: usize) -> &'static FieldSpec {
        &self.fields[i]
    }

    /// `GET /sobjects/{Type}/describe`, in the shape of a real describe (and of enrichd's
    /// fixtures): every visible field with all of describe's attributes.
    pub(crate) fn describe(&self, version: &str, instance_url: &str) -> Value {
        let o = self.obj.name();
        let base = format!("/services/data/{version}/sobjects/{o}");
        let fields: Vec<Value> = self
            .fields
            .iter()
            .enumerate()
            .filter(|(i, _)| self.visible[*i])
            .map(|(_, f)| field_json(f))
            .collect();
        let mut a = json!({
            "actionOverrides": [],
            "activateable": false,
            "associateEntityType": null,
            "associateParentEntity": null,
            "childRelationships": [],
            "compactLayoutable": true,
            "createable": true,
            "custom": false,
            "customSetting": false,
            "deepCloneable": false,
            "defaultImplementation": null,
            "deletable": true,
            "deprecatedAndHidden": false,
            "extendedBy": null,
            "extendsInterfaces": null,
            "feedEnabled": true,
            "fields": fields,
            "hasSubtypes": false,
            "implementedBy": null,
            "implementsInterfaces": null,
            "isInterface": false,
            "isSubtype": false,
        });
        let b = json!({
            "keyPrefix": self.obj.prefix(),
            "label": o,
            "labelPlural": self.obj.label_plural(),
            "layoutable": true,
            "listviewable": null,
            "lookupLayoutable": null,
            "mergeable": true,
            "mruEnabled": true,
            "name": o,
            "namedLayoutInfos": [],
            "networkScopeFieldName": null,
            "queryable": true,
            "recordTypeInfos": [{
                "active": true, "available": true, "defaultRecordTypeMapping": true,
                "developerName": "Master", "master": true, "name": "Master",
                "recordTypeId": "012000000000000AAA",
                "urls": {"layout": format!("{base}/describe/layouts/012000000000000AAA")}
            }],
            "replicateable": true,
            "retrieveable": true,
            "searchLayoutable": true,
            "searchable": true,
            "sobjectDescribeOption": "FULL",
            "supportedScopes": [
                {"label": format!("All {}", self.obj.label_plural().to_lowercase()), "name": "everything"},
                {"label": format!("My {}", self.obj.label_plural().to_lowercase()), "name": "mine"},
                {"label": format!("My team's {}", self.obj.label_plural().to_lowercase()), "name": "team"}
            ],
            "triggerable": true,
            "undeletable": true,
            "updateable": true,
            "urls": {
                "compactLayouts": format!("{base}/describe/compactLayouts"),
                "rowTemplate": format!("{base}/{{ID}}"),
                "approvalLayouts": format!("{base}/describe/approvalLayouts"),
                "uiDetailTemplate": format!("{instance_url}/{{ID}}"),
                "uiEditTemplate": format!("{instance_url}/{{ID}}/e"),
                "listviews": format!("{base}/listviews"),
                "describe": format!("{base}/describe"),
                "uiNewRecord": format!("{instance_url}/{}/e", self.obj.prefix()),
                "quickActions": format!("{base}/quickActions"),
                "layouts": format!("{base}/describe/layouts"),
                "sobject": base,
            }
        });
        if let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object()) {
            for (k, v) in bm {
                am.insert(k.clone(), v.clone());
            }
        }
        a
    }
}

fn field_json(f: &FieldSpec) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("aggregatable", json!(f.aggregatable));
    put("aiPredictionField", json!(false));
    put("autoNumber", json!(false));
    put("byteLength", json!(f.byte_length));
    put("calculated", json!(f.calculated));
    put("calculatedFormula", json!(f.formula));
    put("cascadeDelete", json!(false));
    put("caseSensitive", json!(false));
    put("compoundFieldName", json!(f.compound));
    put("controllerName", Value::Null);
    put("createable", json!(f.createable));
    put("custom", json!(f.custom));
    put("defaultValue", Value::Null);
    put("defaultValueFormula", Value::Null);
    put("defaultedOnCreate", json!(f.defaulted_on_create));
    put("dependentPicklist", json!(false));
    put("deprecatedAndHidden", json!(false));
    put("digits", json!(f.digits));
    put("displayLocationInDecimal", json!(false));
    put("encrypted", json!(false));
    put("externalId", json!(false));
    put("extraTypeInfo", json!(f.extra_type_info));
    put("filterable", json!(f.filterable));
    put("filteredLookupInfo", Value::Null);
    put("formulaTreatNullNumberAsZero", json!(false));
    put("groupable", json!(f.groupable));
    put("highScaleNumber", json!(false));
    put("htmlFormatted", json!(false));
    put("idLookup", json!(f.id_lookup));
    put("inlineHelpText", json!(f.help));
    put("label", json!(f.label));
    put("length", json!(f.length));
    put("mask", Value::Null);
    put("maskType", Value::Null);
    put("name", json!(f.name));
    put("nameField", json!(f.name_field));
    put("namePointing", json!(false));
    put("nillable", json!(f.nillable));
    put("permissionable", json!(f.permissionable));
    put(
        "picklistValues",
        Value::Array(
            f.picklist
                .iter()
                .map(|(v, l, d)| {
                    json!({"active": true, "defaultValue": d, "label": l, "validFor": null, "value": v})
                })
                .collect(),
        ),
    );
    put("polymorphicForeignKey", json!(false));
    put("precision", json!(f.precision));
    put("queryByDistance", json!(false));
    put("referenceTargetField", Value::Null);
    put("referenceTo", json!(f.reference_to));
    put("relationshipName", json!(f.relationship_name));
    put("relationshipOrder", Value::Null);
    put("restrictedDelete", json!(false));
    put("restrictedPicklist", json!(f.restricted));
    put("scale", json!(0));
    put("searchPrefilterable", json!(f.search_prefilterable));
    put("soapType", json!(f.soap_type));
    put("sortable", json!(f.sortable));
    put("type", json!(f.ty));
    put("unique", json!(false));
    put("updateable", json!(f.updateable));
    put("writeRequiresMasterRead", json!(false));
    Value::Object(m)
}
