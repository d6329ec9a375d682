//! The responder (sender) of the media stream (issue 13 §3, D12-D17, D26-D27), sans-IO.
//! Being written.
