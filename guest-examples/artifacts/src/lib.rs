//! The guest components, built for wasm32-wasip2 by this crate's `build.rs`: a path constant
//! for each (`TCP_ECHO_SERVER`, …, `SOCKET_PROBE`) and the bytes of the example guests
//! (`TCP_ECHO_SERVER_BYTES`, …), which the `sockhost` binary embeds for `sockhost demo`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
