//! Time spans as systemd writes them (systemd.time(7)): `90s`, `2m`, `1h 30min`, `500ms`, a
//! bare number of seconds, or `infinity`; and a span printed back the same way.

use std::time::Duration;

/// `text` as a span; `infinity` is [`Duration::MAX`], no limit.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "'{text}' is not a time span: write it as 90s, 2m, 1h30m, 500ms or a number of seconds"
        )
    };
    let text = text.trim();
    if text == "infinity" {
        return Ok(Duration::MAX);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..letters] {
            "ms" | "msec" => Duration::from_millis(1),
            "s" | "sec" | "second" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "minute" | "minutes" => Duration::from_secs(60),
            "h" | "hr" | "hour" | "hours" => Duration::from_secs(3600),
            "d" | "day" | "days" => Duration::from_secs(86400),
            _ => return Err(bad()),
        };
        let n = u32::try_from(number).map_err(|_| bad())?;
        total = unit
            .checked_mul(n)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

/// `span` as [`parse`] reads it back: `1m30s`, `500ms`, `0s`.
pub fn format(span: Duration) -> String {
    let mut out = String::new();
    let mut secs = span.as_secs();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let ms = span.subsec_millis();
    if secs > 0 || (out.is_empty() && ms == 0) {
        out.push_str(&format!("{secs}s"));
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_as_systemd_writes_them() {
        let s = Duration::from_secs;
        assert_eq!(parse("90"), Ok(s(90)));
        assert_eq!(parse("90s"), Ok(s(90)));
        assert_eq!(parse("2m"), Ok(s(120)));
        assert_eq!(parse("2min"), Ok(s(120)));
        assert_eq!(parse("1h30m"), Ok(s(5400)));
        assert_eq!(parse("1h 30min 5s"), Ok(s(5405)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(s(0)));
        assert_eq!(parse("infinity"), Ok(Duration::MAX));
        for bad in ["", "s", "5x", "-5s", "1.5s", "m5", "5 s x", "99999999999h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("soon"),
            Err("'soon' is not a time span: write it as 90s, 2m, 1h30m, 500ms or a number of seconds".into())
        );
    }

    #[test]
    fn spans_print_as_they_parse() {
        for (span, text) in [
            (90, "1m30s"),
            (120, "2m"),
            (5, "5s"),
            (0, "0s"),
            (3600, "1h"),
        ] {
            assert_eq!(format(Duration::from_secs(span)), text);
            assert_eq!(parse(text), Ok(Duration::from_secs(span)));
        }
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::from_millis(200)), "200ms");
    }
}
