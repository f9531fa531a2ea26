//! The list of linked-in backends, for `hecate backends`, the JSON Schema, and a test that
//! catches a backend the linker silently dropped.
//!
//! A backend registers twice: `#[typetag::serde(name = "...")]` makes YAML `type:` find it, and
//! [`register_backend!`](crate::register_backend) adds a row here with its summary and schema.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;

/// Which plugin trait a backend implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendRole {
    /// [`crate::power::PowerSource`].
    PowerSource,
    /// [`crate::node::NodeController`].
    NodeController,
    /// [`crate::cluster::ClusterApi`].
    ClusterApi,
    /// [`crate::gitops::GitOpsBootstrap`].
    GitOps,
    /// [`crate::notify::Notifier`].
    Notifier,
}

impl fmt::Display for BackendRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PowerSource => "power_source",
            Self::NodeController => "node_controller",
            Self::ClusterApi => "cluster_api",
            Self::GitOps => "gitops",
            Self::Notifier => "notifier",
        })
    }
}

/// One registered backend.
pub struct BackendInfo {
    /// The trait it implements.
    pub role: BackendRole,
    /// Its YAML `type:` name (the same word as its module and file).
    pub type_name: &'static str,
    /// One line saying what it talks to.
    pub summary: &'static str,
    /// Its config's JSON Schema, `type` property included.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

impl fmt::Debug for BackendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendInfo").field("role", &self.role).field("type_name", &self.type_name).finish()
    }
}

inventory::collect!(BackendInfo);

/// Every registered backend, sorted by role then name.
pub fn backends() -> Vec<&'static BackendInfo> {
    let mut v: Vec<_> = inventory::iter::<BackendInfo>.into_iter().collect();
    v.sort_by_key(|b| (b.role, b.type_name));
    v
}

/// `T`'s schema with a required `type: NAME` property added, as typetag expects it.
pub fn tagged_schema<T: JsonSchema>(generator: &mut SchemaGenerator, name: &str) -> Schema {
    let mut schema = T::json_schema(generator);
    let obj = schema.ensure_object();
    let props = obj.entry("properties").or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let Some(props) = props.as_object_mut() {
        props.insert("type".into(), serde_json::json!({ "const": name }));
    }
    let required = obj.entry("required").or_insert_with(|| serde_json::json!([]));
    if let Some(req) = required.as_array_mut() {
        req.insert(0, serde_json::json!("type"));
    }
    schema
}

fn one_of(generator: &mut SchemaGenerator, role: BackendRole) -> Schema {
    let variants: Vec<serde_json::Value> =
        backends().into_iter().filter(|b| b.role == role).map(|b| (b.schema)(generator).to_value()).collect();
    schemars::json_schema!({ "oneOf": variants })
}

macro_rules! dyn_schema {
    ($trait:path, $role:ident, $name:literal) => {
        impl JsonSchema for Box<dyn $trait> {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                one_of(generator, BackendRole::$role)
            }
        }
    };
}

dyn_schema!(crate::power::PowerSourceConfig, PowerSource, "PowerSource");
dyn_schema!(crate::node::NodeControllerConfig, NodeController, "NodeController");
dyn_schema!(crate::cluster::ClusterApiConfig, ClusterApi, "ClusterApi");
dyn_schema!(crate::gitops::GitOpsConfig, GitOps, "GitOps");
dyn_schema!(crate::notify::NotifierConfig, Notifier, "Notifier");

/// Registers a backend for `hecate backends` and the JSON Schema:
/// `register_backend!(PowerSource, "nut", "NUT upsd over TCP", NutConfig);`
#[macro_export]
macro_rules! register_backend {
    ($role:ident, $name:literal, $summary:literal, $cfg:ty) => {
        $crate::inventory::submit! {
            $crate::registry::BackendInfo {
                role: $crate::registry::BackendRole::$role,
                type_name: $name,
                summary: $summary,
                schema: |g| $crate::registry::tagged_schema::<$cfg>(g, $name),
            }
        }
    };
}
