//! `/openapi.json`: the JSON API described from the same descriptors that serve it, so the
//! description cannot drift from the API: one path per method, one schema per message (the
//! proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings, enums by name,
//! timestamps as RFC 3339), the proto comments as descriptions.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// The OpenAPI 3.1 document for every service in `pool`.
pub fn document(pool: &DescriptorPool) -> Value {
    let comments = Comments::new(pool);
    let mut paths = Map::new();
    for service in pool.services() {
        for method in service.methods() {
            if method.is_client_streaming() {
                continue;
            }
            let path = format!("/{}/{}", service.full_name(), method.name());
            let description = comments.of(method.parent_file().name(), method.path());
            let input = schema_ref(&method.input());
            let output = schema_ref(&method.output());
            let errors = json!({ "$ref": "#/components/responses/Error" });
            let mut item = Map::new();
            let mut operation = json!({
                "operationId": format!("{}.{}", service.name(), method.name()),
                "tags": [service.name()],
                "summary": description.lines().next().unwrap_or(""),
                "description": description,
                "requestBody": {
                    "required": false,
                    "content": { "application/json": { "schema": input } },
                },
                "responses": { "default": errors },
            });
            if method.is_server_streaming() {
                operation["responses"]["200"] = json!({
                    "description": format!(
                        "Server-Sent Events: each `data:` is one {} as JSON; an `error` event \
                         carries the error that ends the stream.",
                        method.output().full_name()
                    ),
                    "content": { "text/event-stream": { "schema": { "type": "string" } } },
                });
                let mut get = operation.clone();
                get["operationId"] = json!(format!("{}.{}.events", service.name(), method.name()));
                get.as_object_mut().map(|o| o.remove("requestBody"));
                get["parameters"] = json!([{
                    "name": "message",
                    "in": "query",
                    "required": false,
                    "description": format!("The {} as JSON (EventSource can only GET).", method.input().full_name()),
                    "schema": { "type": "string" },
                }]);
                item.insert("get".into(), get);
            } else {
                operation["responses"]["200"] = json!({
                    "description": format!("The {}.", method.output().full_name()),
                    "content": { "application/json": { "schema": output } },
                });
            }
            item.insert("post".into(), operation);
            paths.insert(path, Value::Object(item));
        }
    }
    let mut schemas = Map::new();
    for message in pool.all_messages() {
        if message.is_map_entry() || well_known(&message).is_some() {
            continue;
        }
        schemas.insert(
            message.full_name().to_owned(),
            message_schema(&message, &comments),
        );
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": { "type": "string", "description": "The gRPC code's name, as the Connect protocol writes it (`invalid_argument`)." },
                "message": { "type": "string" },
                "field": { "type": "string", "description": "The request field at fault (`messages[0].text`), when one is." },
            },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "modbot",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every RPC of modbot's gRPC API as JSON (the Connect protocol's unary JSON: POST /package.Service/Method with Content-Type: application/json). Server streams are Server-Sent Events. Bearer tokens and roles are the gRPC API's own.",
        },
        "security": [{ "bearer": [] }, { "session": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "session": { "type": "apiKey", "in": "cookie", "name": super::session::COOKIE },
            },
            "responses": {
                "Error": {
                    "description": "An error: the HTTP status is the Connect protocol's for the code.",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                },
            },
            "schemas": schemas,
        },
    })
}

fn schema_ref(message: &MessageDescriptor) -> Value {
    well_known(message).unwrap_or_else(
        || json!({ "$ref": format!("#/components/schemas/{}", message.full_name()) }),
    )
}

/// The JSON forms the proto3 mapping gives the well-known types.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "description": "Seconds with an `s` suffix (`1.5s`)." })
        }
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.StringValue" => json!({ "type": ["string", "null"] }),
        "google.protobuf.BoolValue" => json!({ "type": ["boolean", "null"] }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({ "type": ["number", "null"] })
        }
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": ["integer", "null"] })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({ "type": ["string", "null"] })
        }
        _ => return None,
    })
}

fn message_schema(message: &MessageDescriptor, comments: &Comments) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field);
        let description = comments.of(field.parent_file().name(), field.path());
        if !description.is_empty()
            && let Some(object) = schema.as_object_mut()
        {
            object.insert("description".into(), Value::String(description));
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    json!({
        "type": "object",
        "description": comments.of(message.parent_file().name(), message.path()),
        "properties": properties,
    })
}

fn field_schema(field: &FieldDescriptor) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        return json!({
            "type": "object",
            "additionalProperties": kind_schema(&entry.map_entry_value_field().kind()),
        });
    }
    let item = kind_schema(&field.kind());
    if field.is_list() {
        json!({ "type": "array", "items": item })
    } else {
        item
    }
}

fn kind_schema(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "uint32", "minimum": 0 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Message(message) => schema_ref(message),
        Kind::Enum(e) => json!({
            "type": "string",
            "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
        }),
    }
}

/// The leading comments of every element, by file and source path.
struct Comments {
    by_path: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut by_path = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            let Some(info) = &proto.source_code_info else {
                continue;
            };
            for location in &info.location {
                if let Some(comment) = &location.leading_comments {
                    let text = comment
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n")
                        .trim()
                        .to_owned();
                    by_path.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Self { by_path }
    }

    fn of(&self, file: &str, path: &[i32]) -> String {
        self.by_path
            .get(&(file.to_owned(), path.to_vec()))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_but_the_bidirectional_stream_has_a_path_and_schemas_resolve() {
        let pool = super::super::rpc::api_descriptors();
        let doc = document(&pool);
        let paths = doc["paths"].as_object().expect("paths");
        for service in pool.services() {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                assert_eq!(
                    paths.contains_key(&path),
                    !method.is_client_streaming(),
                    "{path}"
                );
            }
        }
        assert!(paths["/modbot.v1.Review/WatchReviews"].get("get").is_some());
        // Every $ref names a schema that exists.
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().expect("a name");
            assert!(
                schemas.contains_key(name),
                "{name} is referenced but missing"
            );
        }
        let classify = &doc["paths"]["/modbot.v1.Moderation/Classify"]["post"];
        assert!(
            classify["description"]
                .as_str()
                .is_some_and(|d| d.contains("Decides one or more messages")),
            "proto comments become descriptions: {classify}"
        );
        let message = &schemas["modbot.v1.ChatMessage"]["properties"];
        assert!(message.get("userId").is_some(), "{message}");
    }
}
