//! Fuzz target `app_frame`: the LOUDSYNC app dialect's client frames as the server reads
//! them: [`app::detect`] (which dialect a connection's first frame is) and [`app::decode`],
//! from any UTF-8 text.
//!
//! Beyond "no panic": whatever `app::decode` accepts obeys every field rule
//! ([`loudsync_fuzz::assert_valid`]: ids, name lengths, no control characters), is detected
//! as the app's (else the server would read that first frame as ours and reject it), and is
//! written back by `app::encode_client` into a frame that is detected as the app's and
//! decodes to the same message (round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_protocol::app::{self, ClientContext, Dialect};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dialect = app::detect(text);
    let Ok(message) = app::decode(text) else {
        return;
    };
    assert_eq!(dialect, Dialect::App, "app::decode accepts {text:?}");
    loudsync_fuzz::assert_valid(&message, text);
    // Everything the app's dialect decodes is something the app's client can say.
    let ctx = ClientContext::new("fuzz-device", 1_700_000_000_000).with_message_id("m-1");
    let encoded = app::encode_client(&message, &ctx)
        .unwrap_or_else(|e| panic!("{message:?} decoded from {text:?} cannot be encoded: {e}"));
    assert_eq!(app::detect(&encoded), Dialect::App, "{encoded:?}");
    let back = app::decode(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, written from {text:?}, does not decode: {e}"));
    assert_eq!(back, message, "round trip of {text:?} through {encoded:?}");
});
