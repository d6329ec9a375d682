//! The initiator (receiver) of the media stream (issue 13 §4, D18-D20, D30-D32), sans-IO.
//! Being written.
