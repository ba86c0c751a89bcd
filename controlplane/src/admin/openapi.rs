//! The admin API's OpenAPI 3.1 document, written out by hand: the API is small, and a generator
//! would add a dependency and macros on every handler for a page of JSON.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, ok: &str) -> Value {
    json!({
        "summary": summary,
        "responses": {
            ok: { "description": "success" },
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "403": { "$ref": "#/components/responses/Forbidden" },
            "404": { "description": "not found", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } },
            "503": { "description": "Redis or PostgreSQL is unavailable" }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served by each gateway on its admin listener (9090). Callers must be in ADMIN:IPADDRESSES and send X-API-Key."
        },
        "servers": [{ "url": super::PREFIX }],
        "security": [{ "apiKey": [] }],
        "paths": {
            "/openapi.json": { "get": op("This document", "200") },
            "/media-servers": { "get": op("Media servers in the registry, with their load and drain state", "200") },
            "/media-servers/{id}": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("One media server", "200"),
                "delete": op("Forget a media server's record now (it registers again if alive)", "204")
            },
            "/media-servers/{id}/drain": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "post": op("Drain: no new sessions on this server; existing ones continue", "200"),
                "delete": op("Stop draining", "200")
            },
            "/channels": { "get": op("Active channels with their clients and connections", "200") },
            "/channels/{channel}": {
                "parameters": [{ "$ref": "#/components/parameters/channel" }],
                "get": op("One active channel", "200")
            },
            "/channels/{channel}/clients/{client}": {
                "parameters": [
                    { "$ref": "#/components/parameters/channel" },
                    { "name": "client", "in": "path", "required": true, "schema": { "type": "string" } }
                ],
                "delete": op("Kick a client: its signalling socket closes (code 4003)", "204")
            }
        },
        "components": {
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" }
            },
            "parameters": {
                "id": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                "channel": { "name": "channel", "in": "path", "required": true, "schema": { "type": "string" } }
            },
            "responses": {
                "Unauthorized": { "description": "X-API-Key missing or wrong", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } },
                "Forbidden": { "description": "the caller's address is not in ADMIN:IPADDRESSES", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
            },
            "schemas": {
                "Problem": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] },
                "MediaServer": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" }, "region": { "type": "string" },
                        "available": { "type": "boolean" }, "active": { "type": "boolean" },
                        "overCapacity": { "type": "boolean" }, "usedCapacity": { "type": "number" },
                        "draining": { "type": "boolean" },
                        "ipAddresses": { "type": "array", "items": { "type": "string" } },
                        "publicIPAddress": { "type": ["string", "null"] },
                        "version": { "type": "string" }, "coreCount": { "type": "integer" },
                        "clusterAddress": { "type": "string" }
                    }
                }
            }
        }
    }))
}
