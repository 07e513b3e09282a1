//! The few query parameters the API reads (`?prefix=..&state=..`).

/// The value of `key` in `query`, percent-decoded (`+` as a space).
pub(super) fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k)? == key).then(|| decode(v)).flatten()
    })
}

fn decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(b) = input.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [input.next()?, input.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn reads_decoded_params() {
        let q = Some("state=open&prefix=GET%20%2Fpay+x&flag");
        assert_eq!(param(q, "prefix").as_deref(), Some("GET /pay x"));
        assert_eq!(param(q, "state").as_deref(), Some("open"));
        assert_eq!(param(q, "flag").as_deref(), Some(""));
        assert_eq!(param(q, "other"), None);
        assert_eq!(param(None, "state"), None);
    }
}
