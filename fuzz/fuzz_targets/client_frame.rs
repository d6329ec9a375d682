//! Fuzz target `client_frame`: our dialect's client frames as the server reads them
//! ([`loudsync_protocol::decode`]), from any UTF-8 text (the WebSocket layer hands the
//! protocol only valid UTF-8 text frames, so other bytes are skipped).
//!
//! Beyond "no panic": a frame that decodes obeys every field rule
//! ([`loudsync_fuzz::assert_valid`]: ids, name lengths, no control characters, strict
//! `protocolVersion`), the version check the core applies agrees with the documented rule
//! (same major version), and the message is written back by `encode_client` into a frame
//! that decodes to the same message (round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_protocol::client::version_compatible;
use loudsync_protocol::{decode, encode_client, ClientMessage, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = decode(text) else {
        return;
    };
    loudsync_fuzz::assert_valid(&message, text);
    if let ClientMessage::Join(join) = &message {
        if let Some(version) = &join.protocol_version {
            assert_eq!(
                version_compatible(version, PROTOCOL_VERSION),
                loudsync_fuzz::compatible(version),
                "version {version:?}"
            );
        }
    }
    // Our dialect has no client `pong`, so everything `decode` gives can be written.
    let encoded = encode_client(&message, 1_700_000_000_000)
        .unwrap_or_else(|e| panic!("{message:?} decoded from {text:?} cannot be encoded: {e}"));
    let back = decode(&encoded)
        .unwrap_or_else(|e| panic!("{encoded:?}, written from {text:?}, does not decode: {e}"));
    assert_eq!(back, message, "round trip of {text:?} through {encoded:?}");
});
