//! One line from QEMU's QMP socket, as `read_loop` hands it to `parse`: whatever QEMU (or
//! whatever sits on the socket) writes must give a message or an error, never a panic, and
//! a reply must keep the id it came with, or it wakes the wrong caller.
#![no_main]

use gns3_qemud::vm::qmp::{parse, Error, Event, Message};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|line: &[u8]| {
    let parsed = parse(line);
    // serde_json's own reading of the line, to hold `parse` to QMP's rules: a greeting has
    // "QMP", a reply "return" or an "error" object, an event an "event" name, in that order.
    let object = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => m,
        _ => {
            assert!(matches!(parsed, Err(Error::Malformed(_))), "{parsed:?}");
            return;
        }
    };
    let has = |key: &str, kind: fn(&Value) -> bool| object.get(key).is_some_and(kind);
    let greeting = object.contains_key("QMP");
    let ret = !greeting && object.contains_key("return");
    let error = !greeting && !ret && has("error", Value::is_object);
    let event = !greeting && !ret && !error && has("event", Value::is_string);
    let id = object.get("id").and_then(Value::as_u64);
    let message = match parsed {
        Err(e) => {
            assert!(matches!(e, Error::Malformed(_)), "{e:?}");
            assert!(!(greeting || ret || error || event), "{object:?} refused");
            return;
        }
        Ok(m) => m,
    };
    match &message {
        Message::Greeting => assert!(greeting),
        Message::Return { id: got, value } => {
            assert!(ret);
            assert_eq!(*got, id);
            assert_eq!(object.get("return"), Some(value));
        }
        Message::Error { id: got, .. } => {
            assert!(error);
            assert_eq!(*got, id);
        }
        Message::Event(Event { name, .. }) => {
            assert!(event);
            assert_eq!(
                object.get("event").and_then(Value::as_str),
                Some(name.as_str())
            );
        }
    }
    round_trip(&message);
});

/// What `parse` made of a line, written back as QMP, reads the same: the id above all.
fn round_trip(message: &Message) {
    let (line, exact) = match message {
        Message::Greeting => (json!({ "QMP": {} }), true),
        Message::Return { id, value } => (json!({ "return": value, "id": id }), no_float(value)),
        Message::Error { id, class, desc } => (
            json!({ "id": id, "error": { "class": class, "desc": desc } }),
            true,
        ),
        Message::Event(Event { name, data }) => {
            (json!({ "event": name, "data": data }), no_float(data))
        }
    };
    let again = match parse(line.to_string().as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("{message:?} written back as {line} does not parse: {e}"),
    };
    match (message, &again) {
        (Message::Greeting, Message::Greeting) => {}
        (Message::Return { id: a, .. }, Message::Return { id: b, .. })
        | (Message::Error { id: a, .. }, Message::Error { id: b, .. }) => assert_eq!(a, b),
        (Message::Event(a), Message::Event(b)) => assert_eq!(a.name, b.name),
        _ => panic!("{message:?} came back as {again:?}"),
    }
    if exact {
        assert_eq!(message, &again);
    }
}

/// serde_json's default float parsing may land one ulp off the written value, so only a
/// value without floats is sure to come back equal.
fn no_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => !n.is_f64(),
        Value::Array(a) => a.iter().all(no_float),
        Value::Object(m) => m.values().all(no_float),
        _ => true,
    }
}
