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

/// `op` that all-in-one refuses for its one media server, which it cannot drain or forget.
fn cluster_only(mut op: Value) -> Value {
    op["responses"]["409"] = json!({ "description": "all-in-one: its only media server cannot be drained or forgotten" });
    op
}

/// `op` with a JSON request body and a 400 for a body that fails the checks.
fn with_body(mut op: Value) -> Value {
    op["requestBody"] = json!({ "required": true, "content": { "application/json": {} } });
    op["responses"]["400"] = json!({ "description": "the body is not valid; the error says why" });
    op
}

pub async fn document() -> Json<Value> {
    Json(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served by each gateway, and by all-in-one, on its admin listener (9090). Callers must be in ADMIN:IPADDRESSES and send X-API-Key. All-in-one lists itself as its one media server, `all-in-one`. The operator's console, /admin on the same listener, is a page over this API."
        },
        "servers": [{ "url": super::PREFIX }],
        "security": [{ "apiKey": [] }],
        "paths": {
            "/openapi.json": { "get": op("This document", "200") },
            "/media-servers": { "get": op("Media servers in the registry, with their load and drain state", "200") },
            "/media-servers/{id}": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("One media server", "200"),
                "delete": cluster_only(op("Forget a media server's record now (it registers again if alive)", "204"))
            },
            "/media-servers/{id}/drain": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "post": cluster_only(op("Drain: no new sessions on this server; existing ones continue", "200")),
                "delete": cluster_only(op("Stop draining", "200"))
            },
            "/channels": { "get": op("Active channels with their clients and connections", "200") },
            "/channels/{channel}": {
                "parameters": [{ "$ref": "#/components/parameters/channel" }],
                "get": op("One active channel", "200")
            },
            "/applications": { "get": op("Applications with their shared secrets", "200") },
            "/applications/{id}": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("One application", "200"),
                "put": with_body(op("Create or replace an application: {\"secrets\": [one or two]}", "200")),
                "delete": op("Delete an application with its channel configurations and webhooks", "204")
            },
            "/applications/{id}/secrets": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "post": with_body(op("Rotate: add {\"secret\"} as the newest; the previous stays valid", "200"))
            },
            "/applications/{id}/secrets/retire": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "post": with_body(op("Retire {\"secret\"}: tokens signed with it are refused", "200"))
            },
            "/applications/{id}/channel-configs": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("The application's channel configurations, in order", "200"),
                "put": with_body(op("Create or replace the configuration for a pattern (`*` wildcards, catch-all `*` last): allowedCodecs, maxBitrateKbps, sfuAllowed, mcuAllowed, and the MCU canvas (mcuLayout grid or speaker, mcuCanvasWidth, mcuCanvasHeight, mcuFrameRate; null: the deployment's), and recording (every publication recorded; all-in-one)", "200")),
                "delete": {
                    "summary": "Delete the configuration of ?pattern=",
                    "parameters": [{ "name": "pattern", "in": "query", "required": true, "schema": { "type": "string" } }],
                    "responses": { "204": { "description": "deleted" }, "404": { "description": "no such pattern" } }
                }
            },
            "/applications/{id}/webhooks": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("The application's webhooks, by name", "200"),
                "put": with_body(op("Create or replace a webhook: {\"name\" (optional, default the URL), \"url\" (http:// or https://), \"events\" (event types; empty or absent: all)}. Each event is POSTed as JSON with X-ApplicationSignature: Base64 of HMAC-SHA256 of the body under the application's newest secret", "200")),
                "delete": {
                    "summary": "Delete the webhook of ?name=",
                    "parameters": [{ "name": "name", "in": "query", "required": true, "schema": { "type": "string" } }],
                    "responses": { "204": { "description": "deleted" }, "404": { "description": "no such webhook" } }
                }
            },
            "/applications/{id}/webhook-deliveries": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": {
                    "summary": "The application's latest webhook deliveries, newest first (all-in-one; in memory, the last 1000 of all applications)",
                    "parameters": [{ "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100, "maximum": 1000 } }],
                    "responses": { "200": { "description": "deliveries: id, eventId, eventType, channelId, webhook, url, state (pending, delivered, failed, dropped), attempts, lastStatus, lastError, createdAt, updatedAt (Unix ms)" }, "400": { "description": "a gateway: webhooks are sent by all-in-one only so far" } }
                }
            },
            "/applications/{id}/sip-mappings": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("The application's SIP mappings, by position, then name", "200"),
                "put": with_body(op("Create or replace a SIP mapping: {\"name\", \"position\" (lower first, across all applications; default 0), \"kind\" (number: the Request-URI's user, extension: the To URI's user, header: the value of \"header\"; default number), \"header\" (exactly for kind header), \"pattern\" (a glob without regard to case, * any run, ? one character; a regular expression if it starts with ^), \"channelId\" ({match} stands for the matched value)}", "200")),
                "delete": {
                    "summary": "Delete the SIP mapping of ?name=",
                    "parameters": [{ "name": "name", "in": "query", "required": true, "schema": { "type": "string" } }],
                    "responses": { "204": { "description": "deleted" }, "404": { "description": "no such mapping" } }
                }
            },
            "/sip/trunks": { "get": op("SIP trunks, by name, passwords masked", "200") },
            "/sip/trunks/{name}": {
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": op("One SIP trunk, its password masked", "200"),
                "put": with_body(op("Create or replace a SIP trunk: {\"domain\" (host or host:port), \"transport\" (udp, tcp or tls; default udp), \"register\", \"username\", \"password\" (absent or \"****\": the stored one stays; \"\": none), \"authorizationId\", \"outboundProxy\", \"callerId\", \"canTerminate\" (calls out go through the first such by name), \"enabled\" (default true)}", "200")),
                "delete": op("Delete a SIP trunk", "204")
            },
            "/deployments": { "get": op("Deployments: STUN servers, capacity thresholds, clustering strategy, TURN secrets (masked)", "200") },
            "/deployments/{id}": {
                "parameters": [{ "$ref": "#/components/parameters/id" }],
                "get": op("One deployment", "200"),
                "put": with_body(op("Create or replace a deployment; turnSecret and turnPreviousSecret given as \"****\" keep their stored values", "200")),
                "delete": op("Delete a deployment", "204")
            },
            "/audit": {
                "get": {
                    "summary": "The audit log, newest first",
                    "parameters": [{ "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100, "maximum": 1000 } }],
                    "responses": { "200": { "description": "entries: id, at (Unix ms), actor, action, target, detail" } }
                }
            },
            "/recordings": {
                "get": {
                    "summary": "Recorded sessions from the recording database, newest first, each with its files",
                    "parameters": [
                        { "name": "channel", "in": "query", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100, "maximum": 1000 } }
                    ],
                    "responses": { "200": { "description": "sessions: id, channelId, startAt, endAt, participants, state (pending, queued, muxed, failed, stored), muxed (its object URL once stored), error, files (file, clientId, userId, connectionId, state, startAt, durationMs)" } }
                }
            },
            "/channels/{channel}/clients/{client}": {
                "parameters": [
                    { "$ref": "#/components/parameters/channel" },
                    { "name": "client", "in": "path", "required": true, "schema": { "type": "string" } }
                ],
                "delete": op("Kick a client: its signalling socket closes (code 4003)", "204")
            },
            "/channels/{channel}/recording": {
                "parameters": [{ "$ref": "#/components/parameters/channel" }],
                "post": op("Record the channel's publications, now and as they come: each track to its own file under <data-dir>/recordings/<channel>/ of the media server that holds it", "200"),
                "delete": op("Stop recording the channel: every file is finished; the files and their lengths", "200")
            },
            "/channels/{channel}/connections/{connection}/recording": {
                "parameters": [
                    { "$ref": "#/components/parameters/channel" },
                    { "name": "connection", "in": "path", "required": true, "schema": { "type": "string" } }
                ],
                "post": op("Record one connection (a publication), whether or not its channel is recorded", "200"),
                "delete": op("Stop recording one connection: its files are finished; the files and their lengths", "200")
            },
            "/channels/{channel}/dial": {
                "parameters": [{ "$ref": "#/components/parameters/channel" }],
                "post": with_body(op("Dial a number through a SIP trunk and join the call to the channel when answered: {\"number\" (0-9, +, *, #; 1-32), \"trunk\" (optional: else the first enabled that canTerminate), \"callerId\" (optional), \"application\" (optional: else the dev one)}; 202 {\"call\": id} at once; 400 for a bad body or number, 404 when no trunk can carry it, 503 where no SIP connector runs", "202"))
            },
            "/channels/{channel}/dial/{call}": {
                "parameters": [
                    { "$ref": "#/components/parameters/channel" },
                    { "name": "call", "in": "path", "required": true, "schema": { "type": "string" } }
                ],
                "delete": op("Hang up a call out (the id dial returned): CANCEL while it rings, BYE once answered; 404 when no such call is going on in the channel", "204")
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
