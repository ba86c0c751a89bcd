//! SIP trunks and SIP mappings through all-in-one's admin API: created, listed, replaced and
//! deleted; trunk passwords never shown (not in reads, not in the audit log) and kept when a
//! trunk is written back as read; bad bodies refused with a 400 that says why; and both kept in
//! the SQLite store across a restart.

use serde_json::{Value, json};
use switchyard_tests::netns;
use switchyard_tests::recordings::admin;
use switchyard_tests::server::Server;

const PASSWORD: &str = "trunk-password-0123";

/// `method path` with `body` on the admin API: (status, JSON body, raw body).
fn call(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value, String) {
    let r = admin(server, method, path, body);
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json, r.body)
}

/// The names in a list answer.
fn names(list: &Value) -> Vec<&str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    items.iter().filter_map(|i| i["name"].as_str()).collect()
}

#[test]
fn trunks_and_mappings_through_the_admin_api() {
    netns::enter();
    let mut server = Server::start_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);

    // Trunks: created, listed masked, replaced keeping the password, refused when bad.
    let body = json!({
        "domain": "sip.example.com:5060",
        "transport": "tls",
        "register": true,
        "username": "1001",
        "password": PASSWORD,
        "callerId": "+15550100",
        "canTerminate": true
    });
    let (status, trunk, _) = call(&server, "PUT", "/sip/trunks/main", &body.to_string());
    assert_eq!(status, 200, "{trunk}");
    assert_eq!(
        (&trunk["name"], &trunk["password"], &trunk["enabled"]),
        (&json!("main"), &json!("****"), &json!(true)),
        "{trunk}"
    );
    let backup = r#"{"domain":"[2001:db8::1]:5080","transport":"udp"}"#;
    let (status, _, _) = call(&server, "PUT", "/sip/trunks/backup", backup);
    assert_eq!(status, 200);
    let (status, list, raw) = call(&server, "GET", "/sip/trunks", "");
    assert_eq!((status, names(&list)), (200, vec!["backup", "main"]));
    assert_eq!(list[0]["password"], Value::Null, "none set: {raw}");
    assert!(!raw.contains(PASSWORD), "{raw}");
    let mut changed = trunk.clone();
    changed["enabled"] = json!(false);
    let (status, trunk, _) = call(&server, "PUT", "/sip/trunks/main", &changed.to_string());
    assert_eq!(
        (status, &trunk["enabled"], &trunk["password"]),
        (200, &json!(false), &json!("****")),
        "the placeholder written back keeps the password: {trunk}"
    );
    for bad in [
        "{not json",
        r#"{"domain":"sip.example.com","transport":"sctp"}"#,
        r#"{"domain":"sip:sip.example.com"}"#,
        r#"{"domain":"sip.example.com","register":true}"#,
        r#"{"domain":"sip.example.com","username":"a\r\nVia: x"}"#,
    ] {
        let (status, body, _) = call(&server, "PUT", "/sip/trunks/bad", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (status, body, _) = call(&server, "GET", "/sip/trunks/bad", "");
    assert_eq!(status, 404, "{body}");

    // Mappings: the application's, in order; replaced by name; refused when bad.
    let (status, _, _) = call(
        &server,
        "PUT",
        "/applications/acme",
        r#"{"secrets":["a-long-shared-secret"]}"#,
    );
    assert_eq!(status, 200);
    let path = "/applications/acme/sip-mappings";
    let each = r#"{"name":"each","position":10,"pattern":"*","channelId":"{match}"}"#;
    let (status, mapping, _) = call(&server, "PUT", path, each);
    assert_eq!(status, 200, "{mapping}");
    assert_eq!(
        (&mapping["applicationId"], &mapping["kind"]),
        (&json!("acme"), &json!("number"))
    );
    let room = r#"{"name":"room","kind":"header","header":"X-Room","pattern":"room-*",
                   "channelId":"rooms-{match}"}"#;
    let (status, _, _) = call(&server, "PUT", path, room);
    assert_eq!(status, 200);
    let (status, list, _) = call(&server, "GET", path, "");
    assert_eq!((status, names(&list)), (200, vec!["room", "each"]));
    let each = r#"{"name":"each","position":10,"kind":"extension","pattern":"1???","channelId":"ext-{match}"}"#;
    let (status, mapping, _) = call(&server, "PUT", path, each);
    assert_eq!((status, &mapping["kind"]), (200, &json!("extension")));
    let (_, list, _) = call(&server, "GET", path, "");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "replaced: {list}");
    for bad in [
        r#"{"name":"h","kind":"header","pattern":"*","channelId":"c"}"#,
        r#"{"name":"k","kind":"fax","pattern":"*","channelId":"c"}"#,
        r#"{"name":"r","pattern":"^(","channelId":"c"}"#,
        r#"{"name":"","pattern":"*","channelId":"c"}"#,
    ] {
        let (status, body, _) = call(&server, "PUT", path, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (status, _, _) = call(&server, "PUT", "/applications/nobody/sip-mappings", room);
    assert_eq!(status, 404);

    // The audit log has every change and no password; the document has the endpoints.
    let (_, log, raw) = call(&server, "GET", "/audit", "");
    assert!(!raw.contains(PASSWORD), "{raw}");
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "sipTrunk.put").count(), 3);
    assert_eq!(
        actions.iter().filter(|a| **a == "sipMapping.put").count(),
        3
    );
    let (_, doc, _) = call(&server, "GET", "/openapi.json", "");
    for documented in [
        "/sip/trunks",
        "/sip/trunks/{name}",
        "/applications/{id}/sip-mappings",
    ] {
        assert!(doc["paths"][documented].is_object(), "{documented}");
    }

    // Kept across a restart, the password included (still masked).
    server.stop();
    server.restart_with_env(&[], &[("ADMIN__IPADDRESSES", "127.0.0.1/32")]);
    let (status, trunk, _) = call(&server, "GET", "/sip/trunks/main", "");
    assert_eq!(
        (status, &trunk["password"], &trunk["transport"]),
        (200, &json!("****"), &json!("tls"))
    );
    let (_, list, _) = call(&server, "GET", path, "");
    assert_eq!(names(&list), ["room", "each"]);

    // Deleted.
    let (status, _, _) = call(&server, "DELETE", "/sip/trunks/main", "");
    assert_eq!(status, 204);
    let (status, _, _) = call(&server, "DELETE", "/sip/trunks/main", "");
    assert_eq!(status, 404);
    let (status, _, _) = call(&server, "DELETE", &format!("{path}?name=room"), "");
    assert_eq!(status, 204);
    let (status, _, _) = call(&server, "DELETE", &format!("{path}?name=room"), "");
    assert_eq!(status, 404);
    let (_, list, _) = call(&server, "GET", path, "");
    assert_eq!(names(&list), ["each"]);
}
